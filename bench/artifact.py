"""The image tar artifact of a 600 MiB image, and consuming that image downstream instead of building it again.

The image: three layers of 200 MiB from /dev/urandom (incompressible, so the compressors get no easy win) on
a busybox base made locally, built and pushed once with ``buildonce build`` to a private registry.

a) save time: buildonce's artifact writer (``buildonce.artifact.write_artifact`` over
   ``buildonce.docker.engine.Engine.save``, as ``BuildJob.save_artifact`` calls them) against ``docker save -o``,
   interleaved. Both run as processes of their own, so the comparison is CLI against CLI: the writer's
   process does nothing but import buildonce's build module (as a real build has), connect, and save.
   Goal: at most 1.1x ``docker save -o``. gzip and zstd artifacts are timed too, for information.
b) peak memory of that save: the child process's maximum RSS (``os.wait4``), against a child that only
   imports and connects. Goal: under 100 MB.
c) consume by digest: ``buildonce consume`` pulling the pushed image after it was removed locally, against a
   fresh ``--no-cache`` build of the same Dockerfile, interleaved. Before timing, the build's cache records
   (only this run's, found by a marker in the RUN steps) are pruned, and a consume through a FaultProxy checks
   that the layers really come over the wire; another check runs at the end.

    python bench/artifact.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    BUSYBOX_IMAGE,
    STATS_HEADERS,
    VENV_PYTHON,
    MeasurementError,
    bench_parser,
    docker,
    ensure_busybox,
    fresh_sha,
    interleave,
    median,
    mib,
    prune_build_cache,
    push_event,
    remove_images,
    require_engine,
    run_bench,
    run_buildonce,
    run_timed,
    secs,
    section,
    stats_row,
    table,
)
from faultproxy import FaultProxy
from registry_server import RegistryServer

LAYERS = 3
LAYER_MIB = 200
SAVE_GOAL = 1.1
RSS_GOAL = 100 * 1000 * 1000
FRESH_IMAGE = "buildonce-bench/artifact-fresh"


@dataclass(frozen=True)
class Counts:
    save: int
    compressed: int
    consume: int


FULL = Counts(save=4, compressed=1, consume=3)
QUICK = Counts(save=1, compressed=1, consume=1)


# --- the child that saves ---------------------------------------------------------------------------------


def save_child(directory: str, compression: str, references: list[str]) -> int:
    """Save the references as buildonce's build does, print what it took as JSON; with no references, only
    import and connect (the floor of the memory measurement)."""
    from buildonce.artifact import write_artifact
    from buildonce.commands.build_job import SAVE_CHUNK
    from buildonce.compression import Compression
    from buildonce.docker.engine import Engine

    started = time.perf_counter()
    engine = Engine.connect(os.environ)
    report: dict[str, Any] = {}
    if references:
        artifact = write_artifact(
            engine.save(references, SAVE_CHUNK), Path(directory), "bench-artifact", Compression(compression)
        )
        report = {"size": artifact.size, "sha256": artifact.sha256, "path": str(artifact.path)}
    engine.close()
    report["seconds"] = time.perf_counter() - started
    print(json.dumps(report))
    return 0


# --- measuring a process ------------------------------------------------------------------------------------


@dataclass
class Measured:
    seconds: float
    peak_rss: int
    """The process's maximum resident set size, in bytes."""
    output: str


def measured(argv: Sequence[str]) -> Measured:
    """Run a process to the end; its wall time and, from ``wait4``, its own peak RSS (not its children's)."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        process = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read().decode(errors="replace")
    if process.returncode != 0:
        raise MeasurementError(f"{' '.join(argv[:3])} … exited {process.returncode}:\n{output[-3000:]}")
    return Measured(seconds, usage.ru_maxrss * 1024, output)


def settle() -> None:
    """Write back the previous run's dirty pages, so that they do not slow down the next run's writes."""
    os.sync()


# --- the benchmark -------------------------------------------------------------------------------------------


@dataclass
class Bench:
    root: Path
    marker: str
    context: Path = field(init=False)
    out: Path = field(init=False)
    rss: dict[str, list[int]] = field(default_factory=dict)
    sizes: dict[str, list[int]] = field(default_factory=dict)
    inner: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.context = self.root / "context"
        self.context.mkdir()
        steps = [f'RUN echo "$BUST" > /bust && head -c {LAYER_MIB}m /dev/urandom > /layer0 # {self.marker}']
        steps += [f"RUN head -c {LAYER_MIB}m /dev/urandom > /layer{i} # {self.marker}" for i in range(1, LAYERS)]
        (self.context / "Dockerfile").write_text(f"FROM {BUSYBOX_IMAGE}\nARG BUST=0\n" + "\n".join(steps) + "\n")
        (self.context / ".dockerignore").write_text(".runner\n")  # buildonce's runner files, made in its workdir
        self.out = self.root / "out"
        self.out.mkdir()

    def record(self, name: str, run: Measured, size: int) -> None:
        self.rss.setdefault(name, []).append(run.peak_rss)
        self.sizes.setdefault(name, []).append(size)

    def docker_save(self, reference: str) -> float:
        settle()
        path = self.out / "docker-save.tar"
        run = measured(["docker", "save", "-o", str(path), reference])
        self.record("docker save -o", run, path.stat().st_size)
        path.unlink()
        return run.seconds

    def buildonce_save(self, name: str, compression: str, references: list[str]) -> float:
        settle()
        run = measured([VENV_PYTHON, __file__, "--save-child", str(self.out), compression, *references])
        report = json.loads(run.output.strip().splitlines()[-1])
        self.record(name, run, int(report.get("size", 0)))
        self.inner.setdefault(name, []).append(float(report["seconds"]))
        for leftover in self.out.iterdir():
            leftover.unlink()
        return run.seconds


def build_and_push(bench: Bench, image: str) -> tuple[str, str, str, float]:
    """Build the big image once with buildonce and push it; its digest, local reference, commit and time."""
    sha = fresh_sha()
    event_name, event, env = push_event(sha)
    inputs = {"images": image, "artifact": "false", "build-args": f"BUST={secrets.token_hex(8)}"}
    run = run_buildonce("build", bench.context, event_name=event_name, event=event, env=env, inputs=inputs)
    tag = run.outputs["immutable-tag"]
    return run.outputs["digest"], f"{image}:{tag}", sha, run.seconds


def save(bench: Bench, reference: str, counts: Counts) -> tuple[float, int]:
    size = int(docker("image", "inspect", "--format", "{{.Size}}", reference).strip() or 0)
    section(
        f"a) save {reference.rsplit('/', 1)[-1]} (engine reports {mib(size)}): median of {counts.save} "
        "interleaved runs, sync between runs (the image was just built: its blobs are in the page cache)"
    )
    variants: list[tuple[str, Callable[[], float]]] = [
        ("docker save -o (baseline)", lambda: bench.docker_save(reference)),
        ("buildonce artifact writer (process)", lambda: bench.buildonce_save("none", "none", [reference])),
    ]
    samples = interleave(variants, counts.save)
    base = median(samples[variants[0][0]])
    rows = [stats_row(name, samples[name], base, secs) for name, _ in variants]
    inner = bench.inner["none"]
    rows.append(stats_row("  its save alone (in-process, after imports)", inner, base, secs))
    for row, key in zip(rows, ["docker save -o", "none", "none"], strict=True):
        row.append(mib(max(bench.sizes[key])))
    print(table((*STATS_HEADERS, "tar size"), rows))
    save_ratio = median(samples[variants[1][0]]) / base

    section(f"a) compressed artifacts, for information: median of {counts.compressed} runs")
    compressed = {
        kind: [bench.buildonce_save(kind, kind, [reference]) for _ in range(counts.compressed)]
        for kind in ("gzip", "zstd")
    }
    none_time, none_size = median(samples[variants[1][0]]), median(bench.sizes["none"])
    rows = [["none (plain tar)", secs(none_time), "1.00x", mib(none_size), "1.000"]]
    for kind, times in compressed.items():
        took, kind_size = median(times), median(bench.sizes[kind])
        rows.append([kind, secs(took), f"{took / none_time:.2f}x", mib(kind_size), f"{kind_size / none_size:.3f}"])
    print(table(("artifact-compression", "time", "vs none", "size", "size vs none"), rows))

    section("b) peak RSS of the saving process (max over its runs)")
    floor = measured([VENV_PYTHON, __file__, "--save-child", str(bench.out), "none"])
    rss_rows = [["buildonce: imports + connect, no save", mib(floor.peak_rss), ""]]
    for kind in ("none", "gzip", "zstd"):
        peak = max(bench.rss[kind])
        extra = (peak - floor.peak_rss) / (1 << 20)
        rss_rows.append([f"buildonce artifact writer, {kind}", mib(peak), f"{extra:+.1f} MiB"])
    rss_rows.append(["docker save -o (the Go CLI)", mib(max(bench.rss["docker save -o"])), ""])
    print(table(("process", "peak RSS", "for the save"), rss_rows))
    peak = max(max(bench.rss[kind]) for kind in ("none", "gzip", "zstd"))
    print(f"largest peak of a buildonce save: {peak / 1e6:.0f} MB (goal < {RSS_GOAL / 1e6:.0f} MB)")
    return save_ratio, peak


@dataclass
class ConsumeSetup:
    registry: RegistryServer
    repository: str
    digest: str
    sha: str


def blobs_fetched(bench: Bench, setup: ConsumeSetup, stack: ExitStack) -> int:
    """Consume through a FaultProxy (untimed) and count the layer blobs that came over the wire."""
    proxy = stack.enter_context(FaultProxy(setup.registry.address))
    run_consume(bench, f"{proxy.address}/{setup.repository}", setup)
    fetched = proxy.count("GET", r"/blobs/sha256:", outcome=200)
    remove_images([proxy.address + "/"])
    proxy.stop()
    return fetched


def run_consume(bench: Bench, image: str, setup: ConsumeSetup) -> float:
    event_name, event, env = push_event(setup.sha)
    inputs = {"image": image, "digest": setup.digest, "sha": setup.sha}
    run = run_buildonce("consume", bench.root / "consumer", event_name=event_name, event=event, env=env, inputs=inputs)
    if run.outputs.get("digest") != setup.digest:
        raise MeasurementError(f"consume gave {run.outputs.get('digest')}, not {setup.digest}:\n{run.log[-2000:]}")
    return run.seconds


def consume(bench: Bench, setup: ConsumeSetup, counts: Counts, stack: ExitStack) -> float:
    image = f"{setup.registry.address}/{setup.repository}"
    remove_images([setup.registry.address + "/"])
    pruned = prune_build_cache(bench.marker)
    (bench.root / "consumer").mkdir(exist_ok=True)
    before = blobs_fetched(bench, setup, stack)
    if before < LAYERS:
        raise MeasurementError(
            f"a consume fetched only {before} blobs: the engine still holds the layers, so a pull would not be timed"
        )

    def consumed() -> float:
        remove_images([setup.registry.address + "/"])
        return run_consume(bench, image, setup)

    def fresh() -> float:
        tag = f"{FRESH_IMAGE}:{secrets.token_hex(4)}"
        argv = ["docker", "buildx", "build", "--progress", "plain", "--no-cache", "--tag", tag]
        seconds = run_timed([*argv, "--build-arg", f"BUST={secrets.token_hex(8)}", str(bench.context)]).seconds
        remove_images([FRESH_IMAGE])
        prune_build_cache(bench.marker)
        return seconds

    section(
        f"c) consume by digest vs a fresh --no-cache build: median of {counts.consume} interleaved runs "
        f"(cache records pruned first: {pruned}; the check consume fetched {before} blobs)"
    )
    variants: list[tuple[str, Callable[[], float]]] = [
        ("fresh build --no-cache (baseline)", fresh),
        ("buildonce consume by digest", consumed),
    ]
    samples = interleave(variants, counts.consume)
    remove_images([setup.registry.address + "/"])
    after = blobs_fetched(bench, setup, stack)
    base = median(samples[variants[0][0]])
    print(table(STATS_HEADERS, [stats_row(name, samples[name], base, secs) for name, _ in variants]))
    print(f"blobs fetched by a consume after the timed runs: {after} (each consume pulled the layers anew)")
    return median(samples[variants[1][0]]) / base


def measure(counts: Counts) -> None:
    require_engine()
    made_busybox = ensure_busybox()
    marker = f"buildonce-bench-{secrets.token_hex(6)}"
    with tempfile.TemporaryDirectory(prefix="buildonce-bench-artifact-") as temp, ExitStack() as stack:
        root = Path(temp)
        registry = stack.enter_context(RegistryServer(root / "registry"))
        bench = Bench(root, marker)

        def cleanup() -> None:
            remove_images([registry.address + "/", FRESH_IMAGE])
            prune_build_cache(marker)
            if made_busybox:
                docker("image", "rm", BUSYBOX_IMAGE, check=False)

        stack.callback(cleanup)
        repository = "bench-artifact"
        section(f"setup: build and push a {LAYERS} x {LAYER_MIB} MiB image with buildonce")
        digest, reference, sha, seconds = build_and_push(bench, f"{registry.address}/{repository}")
        print(f"built and pushed {reference} ({digest}) in {secs(seconds)}")
        save_ratio, peak = save(bench, reference, counts)
        consume_ratio = consume(bench, ConsumeSetup(registry, repository, digest, sha), counts, stack)
        print(
            f"\nRESULT artifact: save {save_ratio:.2f}x docker save -o (goal ≤ {SAVE_GOAL}x); "
            f"peak RSS {peak / 1e6:.0f} MB (goal < {RSS_GOAL / 1e6:.0f} MB); "
            f"consume by digest {consume_ratio:.2f}x a fresh --no-cache build"
        )


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--save-child", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.save_child:
        directory, compression, *references = args.save_child
        return save_child(directory, compression, references)
    return run_bench("artifact.py", args.quick, lambda: measure(QUICK if args.quick else FULL))


if __name__ == "__main__":
    sys.exit(main())
