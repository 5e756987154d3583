"""Legs and a merge against one build of both platforms, on this machine, interleaved in one run.

Two platforms this machine runs without emulation, linux/amd64 and linux/386 (an x86-64 kernel runs i386
binaries natively), each with a ``RUN`` step that takes about ten seconds of CPU (a busybox shell loop, cache
busted every run). The 386 base is made here from Debian's i386 busybox-static, fetched with ``apt-get
download`` into a temporary apt state (the host's architectures and package lists are left alone).

a) two ``buildonce build`` legs (``distribute: leg``), one process per platform, run at the same time, then
   ``buildonce merge``: wall time from the legs' start to the merge's end;
b) one ``buildonce build`` of both platforms in one process.

One machine cannot show what separate runners gain (both variants share its CPUs), so this measures what
distributing costs: goal (a) within 1.1x of (b). The merge itself publishes 2 platforms x 2 registries x 3 tags:
goal under 1 s, with its requests counted by a FaultProxy in front of each registry (no faults). The model for
N runners is printed with the measured figures.

    python bench/legs.py [--quick]
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import secrets
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (
    BUSYBOX_IMAGE,
    STATS_HEADERS,
    BuildonceRun,
    MeasurementError,
    bench_parser,
    docker,
    ensure_busybox,
    fresh_sha,
    interleave,
    median,
    ms,
    progress,
    prune_build_cache,
    push_event,
    remove_images,
    require_engine,
    run_bench,
    run_buildonce,
    secs,
    section,
    stats_row,
    table,
)
from faultproxy import FaultProxy
from registry_server import RegistryServer

# On the path benchlib puts tests/support on (isort would import it before benchlib).
base_images = importlib.import_module("base_images")

PLATFORMS = ("linux/amd64", "linux/386")
BASES = {"amd64": "buildonce-bench/busybox-amd64:1", "386": "buildonce-bench/busybox-386:1"}
EXTRA_TAGS = ("stable", "candidate")
"""With the branch's own tag, three tags in each registry."""
LOOPS_PER_CPU_SECOND = 800_000
"""Iterations of the shell loop per second of CPU on this machine's cores (about 1.1 to 1.3 s per million)."""
CPU_SECONDS = 10


def i386_busybox(workdir: Path) -> Path:
    """Debian's i386 busybox-static binary, downloaded into ``workdir`` with a private apt state."""
    state = workdir / "apt"
    for sub in ("lists/partial", "cache/archives/partial", "download"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    options = [
        "-o",
        "APT::Architectures=i386",
        "-o",
        "APT::Architecture=i386",
        "-o",
        f"Dir::State::Lists={state / 'lists'}",
        "-o",
        f"Dir::Cache={state / 'cache'}",
        "-o",
        "Dir::State::status=/dev/null",
    ]
    steps = [
        (["apt-get", *options, "update"], state),
        (["apt-get", *options, "download", "busybox-static"], state / "download"),
    ]
    for argv, cwd in steps:
        result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
        if result.returncode != 0:
            raise MeasurementError(f"{' '.join(argv[:1] + argv[-1:])} failed: {result.stderr.strip()[-2000:]}")
    (deb,) = (state / "download").glob("busybox-static_*_i386.deb")
    extracted = workdir / "busybox-i386"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(extracted)], check=True, timeout=120)
    binary = extracted / "bin" / "busybox"
    if not binary.is_file():
        raise MeasurementError(f"{deb.name} holds no bin/busybox")
    return binary


def ensure_bases(workdir: Path) -> list[str]:
    """The two base images (amd64 from the host's busybox-static, 386 from Debian's i386 one); returns those
    made now, to be removed at the end."""
    made = []
    ensure_busybox()
    if not base_images.image_exists(BASES["amd64"]):
        docker("tag", BUSYBOX_IMAGE, BASES["amd64"])
        made.append(BASES["amd64"])
    if not base_images.image_exists(BASES["386"]):
        rootfs = base_images.busybox_rootfs(busybox=str(i386_busybox(workdir)))
        subprocess.run(
            ["docker", "import", "--platform", "linux/386", "-", BASES["386"]],
            input=rootfs,
            capture_output=True,
            check=True,
            timeout=300,
        )
        made.append(BASES["386"])
    return made


@dataclass
class Rep:
    total: float
    legs: list[float]
    merge: float
    merge_requests: Counter[str]


@dataclass
class Bench:
    root: Path
    marker: str
    images: list[str]
    proxies: list[FaultProxy]
    loops: int
    context: Path = field(init=False)
    reps: list[Rep] = field(default_factory=list)
    single_runs: list[BuildonceRun] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.context = self.root / "context"
        self.context.mkdir()
        (self.context / ".dockerignore").write_text(".runner\n")
        # TARGETARCH picks each platform's own base (a stage name: this BuildKit leaves it empty in a FROM
        # of the global scope); BUST makes every run execute the loop.
        (self.context / "Dockerfile").write_text(
            f"FROM {BASES['amd64']} AS base-amd64\n"
            f"FROM {BASES['386']} AS base-386\n"
            "FROM base-$TARGETARCH\n"
            "ARG BUST=0\n"
            f'RUN echo "$BUST" > /bust && i=0 && while [ $i -lt {self.loops} ]; do i=$((i+1)); done # {self.marker}\n'
        )

    def inputs(self, **extra: str) -> dict[str, str]:
        return {
            "images": "\n".join(self.images),
            "tags": ",".join(EXTRA_TAGS),
            "artifact": "false",
            "load": "false",
            "retry-wait-seconds": "1",
            "timeout-minutes": "10",
            **extra,
        }

    def run(self, command: str, sha: str, workdir: Path, inputs: dict[str, str]) -> BuildonceRun:
        event_name, event, env = push_event(sha)
        # Each process gets its own runner files, in the shared context directory's sibling.
        workdir.mkdir(parents=True, exist_ok=True)
        for name in ("Dockerfile", ".dockerignore"):
            shutil.copy(self.context / name, workdir / name)
        return run_buildonce(command, workdir, event_name=event_name, event=event, env=env, inputs=inputs)

    def legs_and_merge(self) -> float:
        sha = fresh_sha()
        bust = secrets.token_hex(8)
        started = time.perf_counter()

        def one_leg(platform: str) -> BuildonceRun:
            inputs = self.inputs(platforms=platform, distribute="leg", **{"build-args": f"BUST={bust}"})
            return self.run("build", sha, self.root / f"leg-{sha[:8]}-{platform.replace('/', '-')}", inputs)

        with ThreadPoolExecutor(max_workers=len(PLATFORMS)) as pool:
            legs = list(pool.map(one_leg, PLATFORMS))
        for proxy in self.proxies:
            proxy.clear_log()
        merge_started = time.perf_counter()
        merged = self.run(
            "merge",
            sha,
            self.root / f"merge-{sha[:8]}",
            self.inputs(platforms=",".join(PLATFORMS), legs="\n".join(leg.outputs["leg"] for leg in legs)),
        )
        ended = time.perf_counter()
        if merged.outputs.get("reused") != "false" or len(json.loads(merged.outputs["platform-digests"])) != 2:
            raise MeasurementError(f"the merge did not publish both platforms:\n{merged.log[-3000:]}")
        requests: Counter[str] = Counter()
        for proxy in self.proxies:
            requests.update(request.method for request in proxy.requests)
        self.reps.append(Rep(ended - started, [leg.seconds for leg in legs], ended - merge_started, requests))
        return ended - started

    def single(self) -> float:
        sha = fresh_sha()
        inputs = self.inputs(platforms=",".join(PLATFORMS), **{"build-args": f"BUST={secrets.token_hex(8)}"})
        run = self.run("build", sha, self.root / f"single-{sha[:8]}", inputs)
        if run.outputs.get("pushed") != "true":
            raise MeasurementError(f"the single build did not push:\n{run.log[-3000:]}")
        self.single_runs.append(run)
        return run.seconds


def calibrate(loops: int) -> float:
    """CPU seconds of the loop on this machine, natively, with the host's busybox."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    before = _children_cpu()
    subprocess.run(
        [busybox, "sh", "-c", f"i=0; while [ $i -lt {loops} ]; do i=$((i+1)); done"], check=True, timeout=600
    )
    return _children_cpu() - before


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(quick: bool) -> None:
    require_engine()
    reps = 2 if quick else 5
    cpu_seconds = 3 if quick else CPU_SECONDS
    loops = LOOPS_PER_CPU_SECOND * cpu_seconds
    marker = f"legs-bench-{secrets.token_hex(4)}"
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="buildonce-bench-legs-")))
        made = ensure_bases(root)
        servers = [stack.enter_context(RegistryServer(root / f"registry-{i}")) for i in range(2)]
        proxies = [stack.enter_context(FaultProxy(server.address)) for server in servers]
        repository = f"legs-{secrets.token_hex(4)}"
        images = [f"{proxy.address}/{repository}" for proxy in proxies]
        prefixes = [*(f"{proxy.address}/" for proxy in proxies), *(f"{server.address}/" for server in servers)]
        bench = Bench(root, marker, images, proxies, loops)
        try:
            progress(f"calibrating: {loops} loop iterations")
            loop_cpu = calibrate(loops)
            section(
                f"Legs (2 processes at once, then the merge) against one build of {' + '.join(PLATFORMS)}; "
                f"RUN loop of {loops} iterations ({loop_cpu:.1f} s of CPU natively here), {reps} reps, interleaved"
            )
            samples = interleave(
                [("a) legs + merge", bench.legs_and_merge), ("b) one build", bench.single)], reps, warmup=1
            )
            report(bench, samples, loop_cpu)
        finally:
            progress("removing this run's images and build cache")
            remove_images(prefixes)
            prune_build_cache(marker)
            for name in made:
                docker("image", "rm", name, check=False)


def report(bench: Bench, samples: dict[str, list[float]], loop_cpu: float) -> None:
    legs_total = median(samples["a) legs + merge"])
    single = median(samples["b) one build"])
    rows = [
        stats_row("b) one build, both platforms", samples["b) one build"], None, secs),
        stats_row("a) two legs at once + merge", samples["a) legs + merge"], single, secs),
    ]
    print(table(STATS_HEADERS, rows))
    measured = bench.reps[1:] if len(bench.reps) > 1 else bench.reps  # the warm-up rep is left out
    slowest = median([max(rep.legs) for rep in measured])
    fastest = median([min(rep.legs) for rep in measured])
    merge = median([rep.merge for rep in measured])
    requests = measured[-1].merge_requests
    print(
        table(
            ("step (median over the timed reps)", "time"),
            [
                ["slowest leg (process start to exit)", secs(slowest)],
                ["fastest leg", secs(fastest)],
                ["merge (2 platforms x 2 registries x 3 tags), process start to exit", ms(merge)],
            ],
        )
    )
    print(
        "merge requests (last rep, both registries): "
        + ", ".join(f"{method} {count}" for method, count in sorted(requests.items()))
        + f", {sum(requests.values())} in all"
    )
    ratio = legs_total / single
    print(
        "\nModel for N runners, one platform each: wall time = slowest leg + merge, against one runner that\n"
        "builds every platform, the foreign ones under QEMU (commonly 5-10x slower per RUN step).\n"
        f"Measured here: a native leg of {loop_cpu:.1f} s of CPU took {secs(slowest)} (slowest of two, on a\n"
        f"shared 2-CPU machine), the merge {ms(merge)}. So N native runners: about {secs(slowest)} + {ms(merge)},\n"
        "whatever N (plus each runner's own start-up, not measured here); one runner with N-1 emulated platforms:\n"
        f"about {loop_cpu:.1f} s + (N-1) x {loop_cpu:.1f} s x 5..10 on its own CPUs, e.g. for N = 2, "
        f"{loop_cpu * 6:.0f}-{loop_cpu * 11:.0f} s against {slowest + merge:.0f} s."
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (others' work included)")
    print(f"RESULT legs+merge/one-build={ratio:.2f}x (goal <= 1.10x) merge={merge * 1000:.0f}ms (goal < 1000ms)")


def main() -> int:
    parser = bench_parser(__doc__)
    args = parser.parse_args()
    return run_bench("legs.py", args.quick, lambda: measure(args.quick))


if __name__ == "__main__":
    raise SystemExit(main())
