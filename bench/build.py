"""``buildonce build`` against plain ``docker buildx build --push`` on the same Dockerfile, tags and registry.

Three measurements, each against a baseline run interleaved with it:

a) overhead: a trivial FROM scratch build with a warm cache (goal: at most 60 ms added to the median of raw
   buildx; also from a git work tree, as a checkout is, where the build key is looked up before buildx, against
   raw buildx in that same work tree), and
   a build whose RUN step sleeps 10 s with a cache-busting build-arg, so that it really runs every time (goal:
   at most 1.05x raw buildx);
b) one transient push fault (a 503 on the first manifest PUT, served by a FaultProxy in front of a private
   registry): buildonce's extra time against a clean buildonce run, next to what re-running the whole
   ``docker buildx build --push`` costs (a retry wrapper's way: the build and push twice). Goal: the extra
   time is one push plus the retry wait, never a build;
c) two registries x five tags against one registry x one tag, same build (goal: at most 1.3x); for the
   trivial build also with load: false, since loading names every tag in the engine, one record at a time.

Every buildonce run gets a fresh commit sha, hence fresh immutable tags, so it never reuses an earlier image;
``push-via`` stays at auto (with the docker driver: build into the engine, which pushes); the artifact is
off unless a row says otherwise, since raw buildx saves none. Each run's output is time-stamped line by line,
so that the push step can be timed apart from the build.

    python bench/build.py [--quick] [--only a|b|c]
"""

from __future__ import annotations

import math
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (
    BUSYBOX_IMAGE,
    STATS_HEADERS,
    BuildonceRun,
    MeasurementError,
    Streamed,
    bench_parser,
    docker,
    ensure_busybox,
    fresh_sha,
    interleave,
    median,
    ms,
    phase_table,
    progress,
    prune_build_cache,
    push_event,
    remove_images,
    require_engine,
    run_bench,
    run_buildonce,
    run_streamed,
    secs,
    section,
    stats_row,
    table,
)
from faultproxy import FaultProxy, Status
from registry_server import RegistryServer

SLEEP_SECONDS = 10
ADDED_GOAL = 0.060
"""Seconds buildonce may add to raw buildx on the trivial build: Python's start and the plan, the tag check beside."""
RETRY_WAIT_SECONDS = 1.0
EXTRA_TAGS = ("edge", "stable", "nightly", "candidate")
BUILD_GROUP = "::group::Build: docker buildx build"
RAW_PUSH_LINE = r"^#\d+ pushing"
"""Where raw buildx's push starts in its plain progress output."""
TRIES = 4
"""How often a run that the product fails is tried again (afresh) before its variant counts as failed."""


@dataclass(frozen=True)
class Counts:
    trivial: int
    slow: int
    fault: int
    fanout_trivial: int
    fanout_slow: int
    warmup: int


FULL = Counts(trivial=10, slow=4, fault=3, fanout_trivial=6, fanout_slow=2, warmup=1)
QUICK = Counts(trivial=3, slow=1, fault=1, fanout_trivial=2, fanout_slow=1, warmup=1)


def branch_tag(sha: str) -> str:
    """The immutable tag buildonce gives a push to the fixture's feature branch."""
    return f"feature-add-new-feature-{sha[:7]}"


@dataclass
class Bench:
    root: Path
    marker: str
    prefixes: list[str]
    """Where the images this run makes are named; they are removed at the end."""
    trivial: Path = field(init=False)
    slow: Path = field(init=False)
    keyed: Path = field(init=False)
    """A git work tree whose context (app/, the trivial build) git holds whole: the build has a key."""
    runs: dict[str, list[BuildonceRun]] = field(default_factory=dict)
    raw_runs: dict[str, list[Streamed]] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)
    """Runs the product failed (each tried again afresh): the first error line of each."""
    tries: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.trivial = self.root / "trivial"
        self.trivial.mkdir()
        (self.trivial / "hello.txt").write_text("hello\n")
        (self.trivial / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
        self.slow = self.root / "slow"
        self.slow.mkdir()
        # The marker names this run's cache records, so that they alone are pruned at the end.
        (self.slow / "Dockerfile").write_text(
            f'FROM {BUSYBOX_IMAGE}\nARG BUST=0\nRUN echo "$BUST" > /bust && sleep {SLEEP_SECONDS} # {self.marker}\n'
        )
        for context in (self.trivial, self.slow):
            # buildonce runs in the context with its runner files there; a real runner keeps them elsewhere.
            (context / ".dockerignore").write_text(".runner\n")
        self.keyed = self.root / "keyed"
        shutil.copytree(self.trivial, self.keyed / "app")
        (self.keyed / ".gitignore").write_text(".runner/\n")
        self.git("init", "-q", "-b", "main")
        self.commit_keyed()

    def git(self, *args: str) -> None:
        subprocess.run(["git", "-C", str(self.keyed), *args], capture_output=True, text=True, check=True)

    def commit_keyed(self) -> None:
        """A new commit whose build context differs (so its key is new, and it builds), untimed."""
        (self.keyed / "app" / "hello.txt").write_text(secrets.token_hex(8))
        self.git("add", "-A")
        self.git("-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "-q", "-m", "change")

    # --- buildonce -----------------------------------------------------------------------------------
    def buildonce(
        self,
        name: str,
        context: Path,
        images: Sequence[str],
        inputs: dict[str, str] | None = None,
        *,
        check: bool = True,
    ) -> BuildonceRun:
        sha = fresh_sha()
        event_name, event, env = push_event(sha)
        all_inputs = {
            "images": "\n".join(images),
            "artifact": "false",
            "retry-wait-seconds": f"{RETRY_WAIT_SECONDS:g}",
            "timeout-minutes": "10",
        }
        if context == self.slow:
            all_inputs["build-args"] = f"BUST={secrets.token_hex(8)}"
        all_inputs.update(inputs or {})
        run = run_buildonce(
            "build", context, event_name=event_name, event=event, env=env, inputs=all_inputs, check=check
        )
        shutil.rmtree(context / ".runner", ignore_errors=True)  # the artifact, when one was saved
        if run.code != 0:
            return run
        if run.outputs.get("pushed") != "true" or run.outputs.get("reused") != "false":
            raise MeasurementError(f"{name}: buildonce did not build and push:\n{run.log[-3000:]}")
        self.runs.setdefault(name, []).append(run)
        return run

    def timed(self, name: str, context: Path, images: Sequence[str], inputs: dict[str, str] | None = None) -> float:
        return self.buildonce(name, context, images, inputs).seconds

    def timed_keyed(self, name: str, images: Sequence[str]) -> float:
        """The trivial build from a git work tree, as a checkout is: its key is looked up before buildx."""
        self.commit_keyed()
        run = self.buildonce(name, self.keyed, images, {"context": "app"})
        if not run.outputs.get("build-key"):
            raise MeasurementError(f"{name}: the build got no key:\n{run.log[-3000:]}")
        return run.seconds

    # --- raw buildx ----------------------------------------------------------------------------------
    def raw_argv(self, context: Path, images: Sequence[str], tags: Sequence[str] = ()) -> list[str]:
        sha = fresh_sha()
        references = [f"{image}:{tag}" for image in images for tag in [branch_tag(sha), *tags]]
        argv = ["docker", "buildx", "build", "--progress", "plain", "--push"]
        argv += [part for ref in references for part in ("--tag", ref)]
        # buildonce labels its image with the commit; so does this, so that each push carries a new config.
        argv += ["--label", f"org.opencontainers.image.revision={sha}"]
        if context == self.slow:
            argv += ["--build-arg", f"BUST={secrets.token_hex(8)}"]
        return [*argv, str(context)]

    def raw_run(self, name: str, argv: list[str], context: Path, *, check: bool = True) -> Streamed:
        run = run_streamed(argv, cwd=context)
        if run.code != 0 and check:
            raise MeasurementError(f"{name}: docker buildx build --push exited {run.code}:\n{run.log[-3000:]}")
        if run.code == 0:
            self.raw_runs.setdefault(name, []).append(run)
        return run

    def raw(self, name: str, context: Path, images: Sequence[str], tags: Sequence[str] = ()) -> float:
        return self.raw_run(name, self.raw_argv(context, images, tags), context).seconds

    def raw_keyed(self, name: str, images: Sequence[str]) -> float:
        """Raw buildx on the git work tree's context, run from its top as buildonce is: buildx reads git there
        too (for its provenance), so this is the baseline of the keyed row."""
        self.commit_keyed()
        return self.raw_run(name, self.raw_argv(self.keyed / "app", images), self.keyed).seconds

    def raw_twice(self, name: str, context: Path, images: Sequence[str], *, cold: bool) -> float:
        """What re-running ``docker buildx build --push`` costs (a retry wrapper's way): the same command
        again after the same wait as buildonce's. ``cold`` builds again without BuildKit's cache, as a
        re-run on a fresh runner does, or any build whose cache the first attempt did not fill."""
        argv = self.raw_argv(context, images)
        started = time.perf_counter()
        self.raw_run(name, argv, context)
        time.sleep(RETRY_WAIT_SECONDS)
        self.raw_run(name, [*argv[:-1], "--no-cache", argv[-1]] if cold else argv, context)
        return time.perf_counter() - started

    # --- runs the product may fail -------------------------------------------------------------------
    def tolerant(self, name: str, attempt: Callable[[], tuple[float, str]]) -> float:
        """Time a run that may fail for a reason of the product's: a failure is recorded and the run tried
        again afresh; NaN (left out of the medians) when every try failed."""
        for _ in range(TRIES):
            seconds, error = attempt()
            self.tries[name] = self.tries.get(name, 0) + 1
            if not error:
                return seconds
            self.failures.setdefault(name, []).append(error)
        return math.nan

    def buildonce_tolerant(
        self, name: str, context: Path, images: Sequence[str], inputs: dict[str, str] | None = None
    ) -> float:
        def attempt() -> tuple[float, str]:
            run = self.buildonce(name, context, images, inputs, check=False)
            errors = [line for line in run.log.splitlines() if line.startswith("::error")]
            return run.seconds, "" if run.code == 0 else (errors or [f"exit {run.code}"])[0]

        return self.tolerant(name, attempt)

    def raw_tolerant(self, name: str, context: Path, images: Sequence[str], tags: Sequence[str] = ()) -> float:
        def attempt() -> tuple[float, str]:
            run = self.raw_run(name, self.raw_argv(context, images, tags), context, check=False)
            errors = [line for line in run.log.splitlines() if "ERROR" in line or "error" in line]
            return run.seconds, "" if run.code == 0 else (errors or [f"exit {run.code}"])[-1]

        return self.tolerant(name, attempt)


def prime(registry: str, repository: str) -> None:
    """Put the base image's layer in the repository, as earlier builds of the project would have."""
    reference = f"{registry}/{repository}:base"
    docker("tag", BUSYBOX_IMAGE, reference)
    docker("push", "-q", reference)


@contextmanager
def registries(root: Path, count: int) -> Iterator[list[RegistryServer]]:
    with ExitStack() as stack:
        yield [stack.enter_context(RegistryServer(root / f"registry-{i}")) for i in range(count)]


def buildonce_push(run: BuildonceRun) -> float | None:
    """buildonce's push step, retries included: from the Push group to the last 'Pushed' line."""
    start, end = run.first("::group::Push"), run.last("Pushed ")
    return end - start if start is not None and end is not None else None


def raw_push(run: Streamed) -> float | None:
    """buildx's push: from its first 'pushing' progress line to the end of the process."""
    start = run.first_match(RAW_PUSH_LINE)
    return run.seconds - start if start is not None else None


def step_median(values: Sequence[float | None]) -> float:
    return median([value for value in values if value is not None])


# --- a) overhead --------------------------------------------------------------------------------------


def overhead(bench: Bench, registry: str, counts: Counts) -> tuple[float, float]:
    image = f"{registry}/bench-build"
    prime(registry, "bench-build")
    section(f"a) trivial FROM scratch build, warm cache: median of {counts.trivial} interleaved runs")
    variants: list[tuple[str, Callable[[], float]]] = [
        ("raw buildx build --push (baseline)", lambda: bench.raw("raw-trivial", bench.trivial, [image])),
        ("buildonce build", lambda: bench.timed("trivial", bench.trivial, [image])),
        (
            "buildonce build, artifact on (its default here)",
            lambda: bench.timed("trivial+artifact", bench.trivial, [image], {"artifact": "true"}),
        ),
        (
            "raw buildx build --push, in a git work tree",
            lambda: bench.raw_keyed("raw-trivial+git", [image]),
        ),
        (
            "buildonce build, in a git work tree (key looked up first)",
            lambda: bench.timed_keyed("trivial+key", [image]),
        ),
    ]
    samples = interleave(variants, counts.trivial, warmup=counts.warmup)
    base = median(samples[variants[0][0]])
    print(table(STATS_HEADERS, [stats_row(name, samples[name], base, ms) for name, _ in variants]))
    added = median(samples["buildonce build"]) - base
    print(f"added by buildonce: {ms(added)} (goal ≤ {ms(ADDED_GOAL)})")
    print(phase_table(bench.runs["trivial"][counts.warmup :]))
    in_git = median(samples["buildonce build, in a git work tree (key looked up first)"]) - median(
        samples["raw buildx build --push, in a git work tree"]
    )
    # An image found by its key is promoted without buildx ever starting, so the look-up (the tags, then the
    # key: a round trip or two, and the registry client's import) comes before buildx.
    print(f"added by buildonce in a git work tree, over raw buildx there: {ms(in_git)} (the key's look-up included)")
    print("in a git work tree (the key looked up before buildx)")
    print(phase_table(bench.runs["trivial+key"][counts.warmup :]))
    raw_step = step_median([raw_push(run) for run in bench.raw_runs["raw-trivial"][counts.warmup :]])
    print(f"raw buildx's own push step (first 'pushing' line to exit), median: {ms(raw_step)}")

    section(f"a) RUN sleep {SLEEP_SECONDS} with a cache-busting build-arg: median of {counts.slow} interleaved runs")
    variants = [
        ("raw buildx build --push (baseline)", lambda: bench.raw("raw-slow", bench.slow, [image])),
        ("buildonce build", lambda: bench.timed("slow", bench.slow, [image])),
    ]
    samples = interleave(variants, counts.slow)
    base = median(samples[variants[0][0]])
    print(table(STATS_HEADERS, [stats_row(name, samples[name], base, secs) for name, _ in variants]))
    slow_ratio = median(samples["buildonce build"]) / base
    print(f"buildonce / raw: {slow_ratio:.3f}x (goal ≤ 1.05x)")
    print(phase_table(bench.runs["slow"]))
    return added, slow_ratio


# --- b) one transient fault ---------------------------------------------------------------------------


@dataclass
class FaultResult:
    extra: float
    """buildonce's whole run, faulted minus clean (medians)."""
    push_extra: float
    """buildonce's push step, faulted minus clean (medians): the same, without the build's noise."""
    expected: float
    """One push plus the retry wait."""
    rerun_cold: float
    rerun_warm: float
    buildkit_extra: float


def fault(bench: Bench, registry: RegistryServer, counts: Counts) -> FaultResult:
    prime(registry.address, "bench-fault")
    with FaultProxy(registry.address) as proxy:
        image = f"{proxy.address}/bench-fault"
        bench.prefixes.append(proxy.address + "/")
        notes: dict[str, list[str]] = {}

        def armed(name: str, run: Callable[[], float]) -> Callable[[], float]:
            """Time ``run`` with a 503 waiting for the first manifest PUT; note how many PUTs it took."""

            def measured() -> float:
                proxy.clear_log()
                rule = proxy.add_rule(Status(503), method="PUT", path=r"/manifests/", times=1)
                seconds = run()
                proxy.clear_rules()
                if rule.hits != 1:
                    raise MeasurementError(f"{name}: the 503 was never served (no manifest PUT reached the proxy)")
                notes.setdefault(name, []).append(f"manifest PUTs {proxy.count('PUT', r'/manifests/')}")
                return seconds

            return measured

        def twice(name: str, cold: bool) -> Callable[[], float]:
            return lambda: bench.raw_twice(name, bench.slow, [image], cold=cold)

        variants: list[tuple[str, Callable[[], float]]] = [
            ("buildonce build, clean (baseline)", lambda: bench.timed("clean", bench.slow, [image])),
            (
                "buildonce build, one 503",
                armed("buildonce build, one 503", lambda: bench.timed("fault", bench.slow, [image])),
            ),
            ("raw buildx --push, clean", lambda: bench.raw("raw-clean", bench.slow, [image])),
            (
                "raw buildx --push, one 503",
                armed("raw buildx --push, one 503", lambda: bench.raw("raw-fault", bench.slow, [image])),
            ),
            ("re-run: raw twice, cache warm", twice("twice-warm", cold=False)),
            ("re-run: raw twice, 2nd --no-cache", twice("twice-cold", cold=True)),
        ]
        section(
            f"b) one 503 on the first manifest PUT, RUN sleep {SLEEP_SECONDS} build, through a FaultProxy: "
            f"median of {counts.fault} interleaved runs; retry wait {RETRY_WAIT_SECONDS:g} s"
        )
        samples = interleave(variants, counts.fault)
    clean = median(samples[variants[0][0]])
    rows = [stats_row(name, samples[name], clean, secs) for name, _ in variants]
    for row in rows:
        row.append("; ".join(dict.fromkeys(notes.get(row[0], []))))
    print(table((*STATS_HEADERS, "proxy saw"), rows))

    push_clean = step_median([buildonce_push(run) for run in bench.runs["clean"]])
    push_fault = step_median([buildonce_push(run) for run in bench.runs["fault"]])
    raw_clean_step = step_median([raw_push(run) for run in bench.raw_runs["raw-clean"]])
    raw_fault_step = step_median([raw_push(run) for run in bench.raw_runs["raw-fault"]])
    steps = [
        ("buildonce (Push group to the last Pushed line)", push_clean, push_fault),
        ("raw buildx (first pushing line to exit)", raw_clean_step, raw_fault_step),
    ]
    rows = [
        [name, ms(clean_step), ms(fault_step), ms(fault_step - clean_step)] for name, clean_step, fault_step in steps
    ]
    print(table(("push step (median)", "clean", "one 503", "extra"), rows))
    faulted = bench.runs["fault"]
    builds = "/".join(sorted({str(run.count(BUILD_GROUP)) for run in faulted}))
    attempts = "/".join(sorted({run.outputs.get("attempts", "?") for run in faulted}))
    raw_clean = median(samples["raw buildx --push, clean"])
    result = FaultResult(
        extra=median(samples["buildonce build, one 503"]) - clean,
        push_extra=push_fault - push_clean,
        expected=RETRY_WAIT_SECONDS + push_clean,
        rerun_cold=median(samples["re-run: raw twice, 2nd --no-cache"]) - raw_clean,
        rerun_warm=median(samples["re-run: raw twice, cache warm"]) - raw_clean,
        buildkit_extra=median(samples["raw buildx --push, one 503"]) - raw_clean,
    )
    print(
        f"buildonce under the fault: buildx ran {builds} time(s) per run, push attempts {attempts}; extra time "
        f"{secs(result.extra)} over the whole run, {secs(result.push_extra)} in the push step, against one push "
        f"({secs(push_clean)}) + the retry wait ({RETRY_WAIT_SECONDS:g} s) = {secs(result.expected)}: "
        f"ratio {result.push_extra / result.expected:.2f}"
    )
    print(
        f"re-running the whole build+push (a retry wrapper's way, wait included): +{secs(result.rerun_cold)} "
        f"when it builds again, +{secs(result.rerun_warm)} when BuildKit's cache still holds the first build"
    )
    print(
        f"raw buildx --push absorbed the 503 itself (+{secs(result.buildkit_extra)} whole run): BuildKit retries "
        "a push that fails with a 5xx, waiting 1, 2 and 4 s, so a wrapper re-runs the build only for a fault "
        "that outlasts about 7 s"
    )
    return result


# --- c) fan-out -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FanOut:
    trivial: float
    trivial_unloaded: float
    slow: float


def fanout(bench: Bench, servers: list[RegistryServer], counts: Counts) -> FanOut:
    for server in servers:
        prime(server.address, "bench-fanout")
    one = [f"{servers[0].address}/bench-fanout"]
    two = [f"{server.address}/bench-fanout" for server in servers]
    many = {"tags": ",".join(EXTRA_TAGS)}
    label = f"{len(two)} registries x {len(EXTRA_TAGS) + 1} tags"
    section(f"c) {label} vs 1 x 1, trivial build: median of {counts.fanout_trivial} interleaved runs")
    unloaded = {"load": "false"}
    variants: list[tuple[str, Callable[[], float]]] = [
        ("buildonce build, 1 x 1 (baseline)", lambda: bench.buildonce_tolerant("fan-1", bench.trivial, one)),
        (f"buildonce build, {label}", lambda: bench.buildonce_tolerant("fan-10", bench.trivial, two, many)),
        (
            "buildonce build, 1 x 1, load: false",
            lambda: bench.buildonce_tolerant("fan-1-unloaded", bench.trivial, one, unloaded),
        ),
        (
            f"buildonce build, {label}, load: false",
            lambda: bench.buildonce_tolerant("fan-10-unloaded", bench.trivial, two, {**many, **unloaded}),
        ),
        ("raw buildx --push, 1 x 1", lambda: bench.raw_tolerant("raw-1", bench.trivial, one)),
        (f"raw buildx --push, {label}", lambda: bench.raw_tolerant("raw-10", bench.trivial, two, EXTRA_TAGS)),
    ]
    samples = interleave(variants, counts.fanout_trivial, warmup=counts.warmup)
    base = median(samples[variants[0][0]])
    print(table(STATS_HEADERS, [stats_row(name, samples[name], base, ms) for name, _ in variants]))

    def ratio_of(many_name: str, one_name: str) -> float:
        return median(samples[many_name]) / median(samples[one_name])

    trivial_ratio = ratio_of(variants[1][0], variants[0][0])
    unloaded_ratio = ratio_of(variants[3][0], variants[2][0])
    raw_ratio = ratio_of(variants[5][0], variants[4][0])
    print(
        f"{label} / 1 x 1: buildonce {trivial_ratio:.2f}x (loading every tag into the engine, the default for "
        f"a branch), {unloaded_ratio:.2f}x with load: false; raw buildx --push {raw_ratio:.2f}x (goal ≤ 1.3x)"
    )
    print(phase_table(bench.runs.get("fan-10", [])))
    print("with load: false")
    print(phase_table(bench.runs.get("fan-10-unloaded", [])))

    section(f"c) {label} vs 1 x 1, RUN sleep {SLEEP_SECONDS} build: median of {counts.fanout_slow} interleaved runs")
    variants = [
        ("buildonce build, 1 x 1 (baseline)", lambda: bench.buildonce_tolerant("fan-1-slow", bench.slow, one)),
        (f"buildonce build, {label}", lambda: bench.buildonce_tolerant("fan-10-slow", bench.slow, two, many)),
    ]
    samples = interleave(variants, counts.fanout_slow)
    base = median(samples[variants[0][0]])
    print(table(STATS_HEADERS, [stats_row(name, samples[name], base, secs) for name, _ in variants]))
    slow_ratio = median(samples[variants[1][0]]) / base
    print(f"{label} / 1 x 1: buildonce {slow_ratio:.3f}x (goal ≤ 1.3x)")
    report_failures(bench)
    return FanOut(trivial_ratio, unloaded_ratio, slow_ratio)


def report_failures(bench: Bench) -> None:
    """Failed runs are left out of the timings (each was tried again afresh), but counted and shown."""
    if not bench.failures:
        print("runs that failed: none")
        return
    for name, errors in bench.failures.items():
        print(f"FAILED runs of {name}: {len(errors)} of {bench.tries[name]} tries; first error:")
        print(f"    {errors[0][:500]}")


def failed_count(bench: Bench, prefix: str) -> str:
    failed = sum(len(errors) for name, errors in bench.failures.items() if name.startswith(prefix))
    tried = sum(count for name, count in bench.tries.items() if name.startswith(prefix))
    return f"{failed}/{tried}"


# --- the whole run ---------------------------------------------------------------------------------------


def tidy(bench: Bench) -> None:
    """Remove a section's images before the next section runs (untimed), so that the store stays small."""
    started = time.perf_counter()
    remove_images(bench.prefixes)
    progress(f"removed this section's images in {time.perf_counter() - started:.0f} s")


def measure(counts: Counts, only: str = "") -> None:
    require_engine()
    made_busybox = ensure_busybox()
    marker = f"buildonce-bench-{secrets.token_hex(6)}"
    with tempfile.TemporaryDirectory(prefix="buildonce-bench-build-") as temp, ExitStack() as stack:
        root = Path(temp)
        servers = stack.enter_context(registries(root, 3))
        bench = Bench(root, marker, [server.address + "/" for server in servers])

        def cleanup() -> None:
            remove_images(bench.prefixes)
            prune_build_cache(marker)
            if made_busybox:
                docker("image", "rm", BUSYBOX_IMAGE, check=False)

        stack.callback(cleanup)
        if only == "a":
            added, slow_ratio = overhead(bench, servers[0].address, counts)
            print(
                f"\nRESULT build (section a only): trivial build +{ms(added)} over raw buildx --push "
                f"(goal ≤ {ms(ADDED_GOAL)}); "
                f"{SLEEP_SECONDS} s build {slow_ratio:.3f}x raw"
            )
            return
        if only == "b":
            faulted = fault(bench, servers[1], counts)
            print(f"\nRESULT build (section b only): one 503: buildonce +{secs(faulted.push_extra)} in the push step")
            return
        if only == "c":
            fan = fanout(bench, [servers[0], servers[2]], counts)
            print(f"\nRESULT build (section c only): 2x5 / 1x1: {fan.trivial:.2f}x trivial, {fan.slow:.3f}x slow")
            return
        added, slow_ratio = overhead(bench, servers[0].address, counts)
        tidy(bench)
        faulted = fault(bench, servers[1], counts)
        tidy(bench)
        fan = fanout(bench, [servers[0], servers[2]], counts)
        print(
            f"\nRESULT build: trivial build +{ms(added)} over raw buildx --push (goal ≤ {ms(ADDED_GOAL)}); "
            f"{SLEEP_SECONDS} s build {slow_ratio:.3f}x raw (goal ≤ 1.05x); "
            f"one 503: buildonce +{secs(faulted.push_extra)} in the push step (+{secs(faulted.extra)} whole run) "
            f"= {faulted.push_extra / faulted.expected:.2f}x (one push + wait), vs re-running buildx --push "
            f"+{secs(faulted.rerun_cold)} rebuilding / +{secs(faulted.rerun_warm)} cached; "
            f"2x5 / 1x1: {fan.trivial:.2f}x trivial ({fan.trivial_unloaded:.2f}x with load: false), "
            f"{fan.slow:.3f}x {SLEEP_SECONDS} s build (goal ≤ 1.3x), "
            f"buildonce fan-out runs failed {failed_count(bench, 'fan-10')}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--only", choices=("a", "b", "c"), default="", help="run one section alone")
    args = parser.parse_args(argv)
    return run_bench("build.py", args.quick, lambda: measure(QUICK if args.quick else FULL, args.only))


if __name__ == "__main__":
    sys.exit(main())
