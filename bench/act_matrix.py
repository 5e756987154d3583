"""The consume action's steps under a real runner: nektos/act runs the pull-request example with four test jobs.

examples/workflows/pull-request.yml, as the runner suite runs it (tests/runner: the registry on loopback, the
stand-in actions), with its test matrix widened to four suites: one build job, then four consume jobs on
this host, each from a fresh RUNNER_TEMP. act logs every step with its duration; this prints, for each of
the composite action's steps, the median over the four jobs of every run, and each job's total set-up
(the check, "Find buildonce's locked wheels", which installs when the store is complete, and "Install
buildonce" when it ran).

The first run's build job fills the wheel store in the host's tool cache (actions/cache is a stand-in that
always misses, as on a runner whose cache is cold); the consume jobs then find it complete. act runs the
jobs two at a time on this 2-core machine, so the four legs share the CPU as a matrix shares a runner pool
only on a self-hosted machine. The jobs' python3 is the bench's own interpreter, first on PATH, as
actions/setup-python makes it.

    .venv/bin/python bench/act_matrix.py [--quick]

It needs what the runner suite needs (act from .venv, node, the stand-ins built by
tests/runner/stand-ins/build), and runs under .venv's Python: the suite's modules read YAML.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from benchlib import (
    REPO,
    MeasurementError,
    bench_parser,
    median,
    ms,
    progress,
    require_engine,
    run_bench,
    section,
    table,
)

RUNNER = REPO / "tests" / "runner"
if str(RUNNER) not in sys.path:
    sys.path.insert(0, str(RUNNER))

from act_setup import copy_own_action, make_act, push_base_image  # noqa: E402
from actrun import ActRun, git_repo  # noqa: E402
from registry_server import TEST_PASSWORD, TEST_USER, RegistryServer  # noqa: E402
from rewrites import EXAMPLES, STAND_INS, rewrite_workflow  # noqa: E402
from scenarios import pull_request  # noqa: E402

LEGS = ("smoke", "integration", "e2e", "load")
SETUP_STEPS = ("Check Docker", "Find buildonce's locked wheels", "Install buildonce")
_DONE = re.compile(r"(?:Success|Failure) - Main (?P<name>.+?) \[(?P<duration>[^\]]+)\]$")
_DURATION = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<unit>ns|µs|us|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds_of(duration: str) -> float:
    """A Go duration as act prints it ("1.234s", "805.5ms", "1m2.5s") in seconds."""
    parts = _DURATION.findall(duration)
    if not parts or "".join(value + unit for value, unit in parts) != duration:
        raise MeasurementError(f"act printed a duration this cannot read: {duration!r}")
    return sum(float(value) * _UNITS[unit] for value, unit in parts)


def step_times(run: ActRun, job: str, found_by: Counter[str]) -> list[dict[str, float]]:
    """Each leg of ``job``: the seconds of every step that ran, by name; what the plan step found (the
    finished install, or the wheel store complete or to restore) is counted in ``found_by``."""
    legs = []
    for leg in run.legs(job):
        times: dict[str, float] = {}
        found_by[_plan_found(leg.lines)] += 1
        for line in leg.lines:
            done = _DONE.search(line)
            if done:
                times[done["name"]] = seconds_of(done["duration"])
        legs.append(times)
    return legs


def _plan_found(lines: Sequence[str]) -> str:
    """What a job's "Find buildonce's locked wheels" step said it found, from the installer's own lines."""
    for line in lines:
        if " is already installed in " in line:
            return "the finished install"
        if "wheel store: " in line:
            state = line.rsplit("(", 1)[-1].rstrip(") ")
            return "the wheel store, complete" if state == "complete" else "the wheel store, to restore"
    return "nothing it said"


def workflow(registry: str, base: str) -> str:
    text = (EXAMPLES / "pull-request.yml").read_text()
    widened = text.replace("suite: [smoke, integration, e2e]", f"suite: [{', '.join(LEGS)}]")
    if widened == text:
        raise MeasurementError("the pull-request example's matrix is not the one this script widens")
    return rewrite_workflow(widened, registry=registry, image_suffix="bench-matrix", base_registry=base)


def measure(runs: int) -> None:
    require_engine()
    binary = Path(sys.executable).parent / "act"
    if not binary.is_file():
        raise MeasurementError(f"act is not installed next to {sys.executable}; run scripts/bootstrap")
    if shutil.which("node") is None or not (STAND_INS / "upload-artifact" / "dist" / "index.js").is_file():
        raise MeasurementError("node and the artifact stand-ins are needed: run tests/runner/stand-ins/build")
    # The jobs run with this host's environment. Their python3 is the interpreter that runs the bench, first on
    # PATH as actions/setup-python puts it: a shim (pyenv's) in front of it would add a tenth of a second to
    # every Python step, which no hosted runner has.
    interpreter = Path(sys.executable).resolve().parent
    os.environ["PATH"] = f"{interpreter}{os.pathsep}{os.environ.get('PATH', '')}"
    with (
        tempfile.TemporaryDirectory(prefix="buildonce-bench-act-") as temp,
        RegistryServer(Path(temp) / "registry", users={TEST_USER: TEST_PASSWORD}) as registry,
        RegistryServer(Path(temp) / "base-registry") as base,
    ):
        scratch = Path(temp)
        progress("pushing the base image and copying the action")
        push_base_image(base.address, scratch)
        act = make_act(str(binary), scratch, copy_own_action(scratch))
        repo = scratch / "repo"
        files = {".github/workflows/pull-request.yml": workflow(registry.address, base.address)}
        sha = git_repo(repo, files, {"examples/app": REPO / "examples" / "app"})
        legs: list[dict[str, float]] = []
        found_by: Counter[str] = Counter()
        for number in range(1, runs + 1):
            progress(f"act run {number}/{runs}")
            run = act.run(repo, "pull-request.yml", "pull_request", pull_request(sha), run_id=500 + number)
            if run.code != 0 or run.result("test") != "success":
                raise MeasurementError(f"the workflow failed:\n{run.describe()}")
            found = step_times(run, "test", found_by)
            if len(found) != len(LEGS):
                raise MeasurementError(f"expected {len(LEGS)} test jobs, act logged {len(found)}")
            legs += found
        report(legs, runs, found_by)


def report(legs: list[dict[str, float]], runs: int, found_by: Counter[str]) -> None:
    section(f"the consume action's steps in {len(LEGS)} matrix jobs x {runs} run(s) under act: median per job")
    by_step: dict[str, list[float]] = defaultdict(list)
    for leg in legs:
        for name, value in leg.items():
            by_step[name].append(value)
    rows = [
        [name, str(len(values)), ms(median(values)), ms(min(values)), ms(max(values))]
        for name, values in by_step.items()
    ]
    print(table(("step", "n", "median", "min", "max"), rows))
    setups = [sum(leg.get(name, 0.0) for name in SETUP_STEPS) for leg in legs]
    installs = sum(1 for leg in legs if "Install buildonce" in leg)
    found = ", ".join(f"{what} in {count}" for what, count in found_by.most_common())
    print(
        f"\nRESULT act matrix: set-up per consume job (check + find/install) median {ms(median(setups))} "
        f"(min {ms(min(setups))}, max {ms(max(setups))}) over {len(legs)} jobs; the plan step found {found}; "
        f"the separate install step ran in {installs}"
    )


def main(argv: list[str] | None = None) -> int:
    args = bench_parser(__doc__).parse_args(argv)
    return run_bench("act_matrix.py", args.quick, lambda: measure(1 if args.quick else 3))


if __name__ == "__main__":
    sys.exit(main())
