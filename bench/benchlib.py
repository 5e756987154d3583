"""What the benchmarks share: timing processes, medians and tables, and the engine fixtures they build on.

Machines are noisy, so every benchmark measures its baseline in the same run, interleaved with the
candidate, and reports medians and ratios; nothing here turns an absolute time into a verdict.

Importing this module puts ``tests/support`` on ``sys.path``, so that the scripts can use the test helpers
(``events``, ``registry_server``, ``faultproxy``, ``runner_format``).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SUPPORT = REPO / "tests" / "support"
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))

import base_images  # noqa: E402
from action_run import clean_environment, runner_setup  # noqa: E402
from events import payload  # noqa: E402

VENV = REPO / ".venv"
VENV_PYTHON = str(VENV / "bin" / "python") if (VENV / "bin" / "python").exists() else sys.executable
"""The interpreter that has buildonce installed; children run with it whatever runs the benchmark."""

BUSYBOX_IMAGE = "buildonce-bench/busybox:1"
REMOVERS = 8


class MeasurementError(Exception):
    """The measurement itself failed (a run that should succeed did not); the script exits 1."""


# --- statistics and printing ---------------------------------------------------------------------


def succeeded(values: Sequence[float]) -> list[float]:
    """The samples of the runs that succeeded: a run the product failed is recorded as NaN."""
    return [value for value in values if not math.isnan(value)]


def median(values: Sequence[float]) -> float:
    """The median of the runs that succeeded; NaN when none did."""
    good = succeeded(values)
    return float(statistics.median(good)) if good else math.nan


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def secs(seconds: float) -> str:
    return f"{seconds:.2f} s"


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 and not math.isnan(value) else "n/a"


def mib(size: float) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [str(cell).ljust(widths[0]) if i == 0 else str(cell).rjust(widths[i]) for i, cell in enumerate(cells)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def stats_row(name: str, samples: Sequence[float], base: float | None, unit: Callable[[float], str]) -> list[str]:
    """name | n | median | min | max | ratio of the median to ``base``; n counts the runs that succeeded."""
    good = succeeded(samples)
    if not good:
        return [name, f"0/{len(samples)}", "failed", "", "", ""]
    mid = median(good)
    return [
        name,
        str(len(good)) if len(good) == len(samples) else f"{len(good)}/{len(samples)}",
        unit(mid),
        unit(min(good)),
        unit(max(good)),
        ratio(mid, base) if base is not None else "",
    ]


STATS_HEADERS = ("variant", "n", "median", "min", "max", "vs baseline")


def code_under_test() -> str:
    """The commit of src/ measured, and whether src/ has changes not committed (others edit concurrently)."""

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
        except OSError:
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    head = git("rev-parse", "--short", "HEAD")
    if head is None:
        return "buildonce (not a git checkout)"
    changed = " + uncommitted changes in src/" if git("status", "--porcelain", "--", "src") else ""
    return f"buildonce at {head}{changed}"


def header(name: str) -> None:
    print(f"{name}: {code_under_test()}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, for a smoke run")
    return parser


def run_bench(script: str, quick: bool, measure: Callable[[], None]) -> int:
    """Print the header, run ``measure`` with output line-buffered, and turn a failed measurement into exit 1."""
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    header(f"bench/{script}" + (" --quick" if quick else ""))
    try:
        measure()
    except MeasurementError as exc:
        print(f"measurement failed: {exc}", file=sys.stderr)
        return 1
    return 0


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# --- running things --------------------------------------------------------------------------------


def interleave(
    variants: Sequence[tuple[str, Callable[[], float]]], reps: int, warmup: int = 0
) -> dict[str, list[float]]:
    """Run every variant ``reps`` times, alternating the order (ABC, CBA, …) so that drift in the machine's
    load falls on every variant alike. Each callable returns the seconds it measured."""
    for _ in range(warmup):
        for name, run in variants:
            progress(f"warm-up: {name}")
            run()
    samples: dict[str, list[float]] = {name: [] for name, _ in variants}
    for rep in range(reps):
        order = list(variants) if rep % 2 == 0 else list(reversed(variants))
        for name, run in order:
            seconds = run()
            samples[name].append(seconds)
            progress(f"{rep + 1}/{reps} {name}: {seconds:.3f} s")
    return samples


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without any runner or input variables, plus ``extra``."""
    return clean_environment(**extra)


@dataclass
class Timed:
    seconds: float
    code: int
    output: str


def run_timed(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    timeout: float = 1800,
) -> Timed:
    """Run a process to the end and time it from spawn to exit (stdout and stderr captured together)."""
    started = time.perf_counter()
    result = subprocess.run(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )
    seconds = time.perf_counter() - started
    if check and result.returncode != 0:
        raise MeasurementError(f"{' '.join(argv[:4])} … exited {result.returncode}:\n{result.stdout[-3000:]}")
    return Timed(seconds, result.returncode, result.stdout)


def docker(*args: str, check: bool = True, timeout: float = 600) -> str:
    return run_timed(["docker", *args], check=check, timeout=timeout).output


def require_engine() -> None:
    """Fail the measurement, saying how to fix it, when there is no engine or no buildx."""
    for argv in (["docker", "info", "--format", "{{.ServerVersion}}"], ["docker", "buildx", "version"]):
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MeasurementError(f"{' '.join(argv)}: {exc}; start the engine with scripts/dev-env up") from None
        if result.returncode != 0:
            raise MeasurementError(f"{' '.join(argv)}: {result.stderr.strip()}; start it with scripts/dev-env up")


# --- buildonce as the runner runs it -----------------------------------------------------------------


@dataclass
class Streamed:
    """A process whose output lines were time-stamped as they arrived."""

    seconds: float
    code: int
    marks: list[tuple[float, str]]
    """Every output line with the time it arrived, seconds after the process was spawned."""

    @property
    def log(self) -> str:
        return "\n".join(line for _, line in self.marks)

    def first(self, prefix: str) -> float | None:
        return next((at for at, line in self.marks if line.startswith(prefix)), None)

    def last(self, prefix: str) -> float | None:
        return next((at for at, line in reversed(self.marks) if line.startswith(prefix)), None)

    def first_match(self, pattern: str) -> float | None:
        compiled = re.compile(pattern)
        return next((at for at, line in self.marks if compiled.search(line)), None)

    def count(self, prefix: str) -> int:
        return sum(1 for _, line in self.marks if line.startswith(prefix))


def run_streamed(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 1800
) -> Streamed:
    started = time.perf_counter()
    process = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    assert process.stdout is not None
    marks = [(time.perf_counter() - started, line.rstrip("\n")) for line in process.stdout]
    code = process.wait(timeout=timeout)
    return Streamed(time.perf_counter() - started, code, marks)


@dataclass
class BuildonceRun(Streamed):
    outputs: dict[str, str]


def fresh_sha() -> str:
    return secrets.token_hex(20)


def push_event(sha: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """A push to a feature branch at ``sha``: event name, payload and the GITHUB_SHA/GITHUB_REF variables.

    A fresh sha gives a fresh immutable tag, so buildonce builds instead of reusing an earlier image."""
    data = payload("push-branch")
    data["after"] = sha
    data["head_commit"]["id"] = sha
    return "push", data, {"GITHUB_SHA": sha, "GITHUB_REF": str(data["ref"])}


def run_buildonce(
    command: str,
    workdir: Path,
    *,
    event_name: str,
    event: dict[str, Any],
    env: Mapping[str, str],
    inputs: Mapping[str, str],
    check: bool = True,
    timeout: float = 1800,
) -> BuildonceRun:
    """``python -I -m buildonce COMMAND`` (as the actions run it) in ``workdir`` with the runner's variables and
    files, set up by tests/support/action_run.py as the tests run it, but streaming the log so that each line gets
    a time stamp (the console flushes each line it writes).

    ``-I`` as in the actions: no ``PYTHON*`` variable of this machine applies (``PYTHONDONTWRITEBYTECODE`` would
    make every run compile again each module changed since its bytecode was last written)."""
    setup = runner_setup(workdir, event_name=event_name, payload=event, env=env, inputs=inputs)
    streamed = run_streamed(
        [VENV_PYTHON, "-I", "-m", "buildonce", command], env=setup.env, cwd=workdir, timeout=timeout
    )
    run = BuildonceRun(streamed.seconds, streamed.code, streamed.marks, setup.outputs())
    if check and run.code != 0:
        raise MeasurementError(f"buildonce {command} exited {run.code}:\n{run.log[-4000:]}")
    return run


BUILD_PHASES = (
    "start-up + plan",
    "before buildx (builder, engine, tag check)",
    "buildx build --load",
    "push + verify",
    "after push (inspect, artifact, outputs, exit)",
)


def build_phases(run: BuildonceRun) -> dict[str, float]:
    """Split a ``buildonce build`` run at the lines that start each step; empty when a line is missing."""
    first = run.marks[0][0] if run.marks else None
    group = run.first("::group::Build: docker buildx build")
    built = run.first("Built ")
    verified = run.first("Verified in the registry")
    if first is None or group is None or built is None or verified is None:
        return {}
    points = [0.0, first, group, built, verified, run.seconds]
    return {name: points[i + 1] - points[i] for i, name in enumerate(BUILD_PHASES)}


def phase_table(runs: Sequence[BuildonceRun]) -> str:
    """The median time of each step over ``runs``."""
    split = [phases for phases in (build_phases(run) for run in runs) if phases]
    if not split:
        return "(no run logged every step)"
    rows = [[name, ms(median([phases[name] for phases in split]))] for name in BUILD_PHASES]
    rows.append(["total", ms(median([run.seconds for run in runs]))])
    return table(("buildonce build step (median)", "time"), rows)


# --- engine fixtures ----------------------------------------------------------------------------------


def ensure_busybox() -> bool:
    """A base image with a shell, made from Debian's busybox-static (nothing is pulled); True if made now."""
    try:
        return base_images.busybox_image(BUSYBOX_IMAGE)
    except base_images.MissingToolError as exc:
        raise MeasurementError(str(exc)) from None


def local_references(prefixes: Sequence[str]) -> list[str]:
    """Every local image reference (name:tag, or name@digest when untagged) whose name starts with a prefix."""
    argv = ["docker", "image", "ls", "--digests", "--format", "{{.Repository}}\t{{.Tag}}\t{{.Digest}}"]
    for _ in range(5):
        # The listing fails now and then while another client removes images ("content digest … not found").
        listed = run_timed(argv, check=False)
        if listed.code == 0:
            break
        time.sleep(1)
    else:
        raise MeasurementError(f"docker image ls failed: {listed.output.strip()}")
    listing = listed.output
    found: list[str] = []
    for row in listing.splitlines():
        repository, _, rest = row.partition("\t")
        tag, _, digest = rest.partition("\t")
        if not repository.startswith(tuple(prefixes)):
            continue
        if tag and tag != "<none>":
            found.append(f"{repository}:{tag}")
        elif digest and digest != "<none>":
            found.append(f"{repository}@{digest}")
    return sorted(set(found))


def remove_images(prefixes: Sequence[str]) -> None:
    """Remove the images, several at a time: with the containerd store each removal waits for a garbage
    collection of the whole store, seconds long on a crowded engine, and removals overlap well."""
    references = local_references(prefixes)
    with ThreadPoolExecutor(max_workers=REMOVERS) as pool:
        list(pool.map(lambda reference: docker("image", "rm", reference, check=False), references))


def prune_build_cache(marker: str) -> int:
    """Remove the build cache records whose step text holds ``marker`` (ours alone; others' cache stays).

    A record with children is only removable once they are gone, so this goes round until none is left."""
    removed: set[str] = set()
    for _ in range(10):
        ids = _cache_ids(marker)
        if not ids:
            break
        for record in ids:
            docker("buildx", "prune", "--force", "--filter", f"id={record}", check=False)
        removed.update(ids)
    return len(removed)


def _cache_ids(marker: str) -> list[str]:
    ids: list[str] = []
    record = ""
    for line in docker("buildx", "du", "--verbose").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "ID":
            record = value.strip()
        elif key.strip() == "Description" and marker in value and record:
            ids.append(record)
    return ids
