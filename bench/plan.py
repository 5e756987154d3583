"""``buildonce plan`` as a whole process, next to interpreter start-up and a trivial node process.

Goal: the median ``buildonce plan`` process on a pull_request event takes at most 150 ms. The baselines run
interleaved with it: ``python -c pass`` (the floor any Python CLI pays) and, when node is installed,
``node -e 0`` (the floor of a JavaScript action). docker/metadata-action's node bundle is said to take about
350 ms on such an event; it cannot run offline here, so that figure is quoted, not measured.

Then ``python -X importtime`` shows where the plan's start-up goes, and confirms that neither the Docker SDK
nor ``requests`` is imported by ``plan``.

    python bench/plan.py [--quick]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (
    STATS_HEADERS,
    VENV,
    VENV_PYTHON,
    MeasurementError,
    bench_parser,
    child_env,
    interleave,
    median,
    ms,
    run_bench,
    run_timed,
    section,
    stats_row,
    table,
)
from events import runner_env
from runner_format import parse_outputs

GOAL_SECONDS = 0.150
METADATA_ACTION_SECONDS = 0.350
"""docker/metadata-action on a pull_request event, as reported; not measurable offline."""
HEAVY_PACKAGES = ("docker", "requests", "urllib3", "zstandard", "tenacity")
NOT_PACKAGES = frozenset({"buildonce", "sitecustomize", "_distutils_hack", "org"})
"""Not dependencies: the package itself, site's hooks, and the Jython probe in the standard library's copy."""
_MAIN = "import sys; from buildonce.cli import main; sys.exit(main())"


def plan_env(output: Path, temp: Path) -> dict[str, str]:
    return child_env(
        **runner_env("pull-request"),
        GITHUB_OUTPUT=str(output),
        RUNNER_TEMP=str(temp),
        INPUT_IMAGES="ghcr.io/acme/widget",
    )


def git_workspace(root: Path) -> Path | None:
    """A work tree with one commit: a real runner's workspace, where plan asks git for the commit time."""
    if shutil.which("git") is None:
        return None
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], capture_output=True, check=True)
    (root / "README").write_text("workspace\n")
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    subprocess.run(["git", "-C", str(root), "add", "README"], capture_output=True, check=True)
    subprocess.run(["git", "-C", str(root), *identity, "commit", "-qm", "init"], capture_output=True, check=True)
    return root


def timer(argv: list[str], env: dict[str, str], cwd: Path, output: Path | None = None) -> Callable[[], float]:
    def run() -> float:
        if output is not None:
            output.write_text("")
        return run_timed(argv, env=env, cwd=cwd).seconds

    return run


@dataclass
class Profile:
    own: dict[str, float]
    """Median self import time of every module."""
    cumulative: dict[str, float]
    depth: dict[str, int]
    """How deeply nested the import is (0: imported by the script itself)."""
    total: float
    order: list[str] = field(default_factory=list)
    """Module names in the order -X importtime printed them: a module's imports just before it."""

    def children(self, parent: str) -> list[str]:
        """The modules imported while ``parent`` was importing (the level just below it), heaviest first."""
        # -X importtime prints children before their parent; the parent's level is one less.
        below = self.depth.get(parent, 0) + 1
        return sorted(
            (name for name, depth in self.depth.items() if depth == below and self._under(name, parent)),
            key=lambda name: self.cumulative[name],
            reverse=True,
        )

    def _under(self, name: str, parent: str) -> bool:
        return self.order.index(name) < self.order.index(parent) and all(
            self.depth[other] > self.depth[parent]
            for other in self.order[self.order.index(name) : self.order.index(parent)]
        )


def import_profile(env: dict[str, str], cwd: Path, runs: int) -> Profile:
    """Median self and cumulative import times of ``buildonce plan``, from ``python -X importtime``."""
    own: dict[str, list[float]] = {}
    cumulative: dict[str, list[float]] = {}
    depth: dict[str, int] = {}
    order: list[str] = []
    totals: list[float] = []
    for _ in range(runs):
        result = subprocess.run(
            [VENV_PYTHON, "-X", "importtime", "-c", _MAIN, "plan"],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise MeasurementError(f"buildonce plan under -X importtime exited {result.returncode}: {result.stderr}")
        total = 0.0
        for line in result.stderr.splitlines():
            fields = line.removeprefix("import time:").split("|")
            if not line.startswith("import time:") or len(fields) != 3 or not fields[0].strip().isdigit():
                continue  # not an import line, or the header
            name = fields[2].strip()
            own.setdefault(name, []).append(int(fields[0]) / 1e6)
            cumulative.setdefault(name, []).append(int(fields[1]) / 1e6)
            # Nesting shows as two more spaces of indentation per level.
            depth[name] = (len(fields[2]) - len(fields[2].lstrip()) - 1) // 2
            if name not in order:
                order.append(name)
            total += int(fields[0]) / 1e6
        totals.append(total)
    return Profile(
        own={name: median(values) for name, values in own.items()},
        cumulative={name: median(values) for name, values in cumulative.items()},
        depth=depth,
        total=median(totals),
        order=order,
    )


def report_imports(profile: Profile) -> dict[str, bool]:
    """Print where the start-up goes; return which of the heavy packages were imported."""
    entry = "buildonce.cli"
    rows = [[name, ms(profile.own[name]), ms(profile.cumulative[name])] for name in profile.children(entry)[:15]]
    rows.insert(0, [entry + " (all of it)", ms(profile.own[entry]), ms(profile.cumulative[entry])])
    print(table(("what buildonce.cli imports", "self", "cumulative"), rows))
    heaviest = sorted(profile.own, key=lambda name: profile.own[name], reverse=True)[:10]
    print()
    print(table(("heaviest modules by own time", "self"), [[name, ms(profile.own[name])] for name in heaviest]))
    names = set(profile.own)
    print(f"sum of all import times: {ms(profile.total)} ({len(names)} modules)")
    third_party = sorted({name.split(".")[0] for name in names} - set(sys.stdlib_module_names) - NOT_PACKAGES)
    print(f"third-party packages imported: {', '.join(third_party) or 'none'}")
    heavy = {pkg: any(n == pkg or n.startswith(pkg + ".") for n in names) for pkg in HEAVY_PACKAGES}
    print("imported by plan: " + ", ".join(f"{pkg}: {'YES' if hit else 'no'}" for pkg, hit in heavy.items()))
    return heavy


def main(argv: list[str] | None = None) -> int:
    args = bench_parser(__doc__).parse_args(argv)
    reps, profile_runs = (5, 2) if args.quick else (30, 7)
    return run_bench("plan.py", args.quick, lambda: measure(reps=reps, profile_runs=profile_runs))


def measure(reps: int, profile_runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="buildonce-bench-plan-") as temp:
        root = Path(temp)
        plain, output = root / "workspace", root / "output"
        plain.mkdir()
        env = plan_env(output, root)
        buildonce = str(VENV / "bin" / "buildonce")

        check = run_timed([buildonce, "plan"], env=env, cwd=plain)
        outputs = parse_outputs(output.read_text())
        if outputs.get("immutable-tag") != "pr-123-abc1234":
            raise MeasurementError(f"plan did not give the expected tag: {outputs}\n{check.output}")

        variants: list[tuple[str, Callable[[], float]]] = [
            ("python -c pass (baseline)", timer([VENV_PYTHON, "-c", "pass"], env, plain)),
        ]
        node = shutil.which("node")
        node_version = ""
        if node:
            node_version = run_timed([node, "--version"]).output.strip()
            variants.append((f"node -e 0 ({node_version})", timer([node, "-e", "0"], env, plain)))
        variants.append(("buildonce plan (pull_request)", timer([buildonce, "plan"], env, plain, output)))
        workspace = git_workspace(root / "git-workspace")
        if workspace is not None:
            variants.append(
                ("buildonce plan, git work tree", timer([buildonce, "plan"], env, workspace, output)),
            )

        section(f"buildonce plan as a process: median of {reps} interleaved runs, after 2 warm-ups")
        samples = interleave(variants, reps, warmup=2)
        base = median(samples[variants[0][0]])
        rows = [stats_row(name, samples[name], base, ms) for name, _ in variants]
        print(table(STATS_HEADERS, rows))
        plan = median(samples["buildonce plan (pull_request)"])
        print(
            f"docker/metadata-action (node bundle): ~{ms(METADATA_ACTION_SECONDS)} as reported for such an event; "
            "not run (no network here)"
        )
        print(f"plan's own cost above interpreter start-up: {ms(plan - base)}")
        if workspace is not None:
            print(
                "'git work tree': the event has no head_commit, so plan asks git for the commit time, as it "
                "would in a checked-out workspace"
            )

        section(f"python -X importtime of buildonce plan: top-level imports, median of {profile_runs} runs")
        heavy = report_imports(import_profile(env, plain, profile_runs))

        verdict = "met" if plan <= GOAL_SECONDS else f"missed by {ms(plan - GOAL_SECONDS)}"
        node_part = ""
        if node:
            node_median = median(samples[f"node -e 0 ({node_version})"])
            node_part = f", {plan / node_median:.2f}x node -e 0 ({ms(node_median)})"
        print(
            f"\nRESULT plan: median {ms(plan)} (goal ≤ {ms(GOAL_SECONDS)}: {verdict}); "
            f"{plan / base:.1f}x python -c pass ({ms(base)}){node_part}; "
            f"{plan / METADATA_ACTION_SECONDS:.2f}x the ~350 ms quoted for metadata-action; "
            f"docker imported: {'YES' if heavy['docker'] else 'no'}, "
            f"requests imported: {'YES' if heavy['requests'] else 'no'}"
        )


if __name__ == "__main__":
    sys.exit(main())
