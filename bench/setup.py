"""The per-job set-up of the composite actions, and the whole consume and build actions around it.

Every row runs the action's steps as the runner runs them (``bash <script>`` with the runner's variables, a
fresh RUNNER_TEMP each time), interleaved with the others, and the medians and ratios are printed.

a) set-up alone: the steps "Find buildonce's locked wheels" + "Install buildonce" (install.sh plan, then
   install.sh), from a fresh RUNNER_TEMP, with the finished install on the machine (a kept runner's tool
   cache, after a job on it), with only the wheel store on the machine (its first job), the store restored
   from a cache (the local half of actions/cache: extracting its tar.zst; the download is not timed, about a
   second on GitHub; a hosted runner's case), missing with pip's cache warm, and missing with an empty pip
   cache and pip pointed at PyPI alone (every wheel downloaded). Against today's install script (run from
   git: a venv with pip bootstrapped, then pip install --require-hashes of the full lock), warm and cold, and
   the options that were measured to choose: pip --python into a venv made --without-pip, and uv (a pinned
   installer, taken as already on the machine). Goals: ≤ 1 s with the store on the machine or restored, ≤ 3 s
   from an empty pip cache.
b) the whole consume action (check engine, the two set-up steps, consume by digest) from a fresh RUNNER_TEMP
   against a bare ``docker pull image@digest`` of an image pushed to a registry on loopback (the image is
   removed locally before each run, untimed): a small one (the busybox base and an 8 MiB layer), and a tiny
   one (a 1 MiB layer), where the action's fixed cost shows most; with the finished install on the machine,
   and with the wheel store alone (the install made, and its bytecode written, in that job: a hosted
   runner's case after a cache restore). Goal: ≤ 2x the pull and ≤ 1.5 s. A row looks the image up by its
   tag instead (as consume does from an event), which adds the tag's resolution and a ``docker tag``.
c) the whole build action (check engine, set-up, ``buildonce build``) against raw ``docker buildx build
   --push`` of the same trivial context, each with a fresh commit (a fresh tag). For information: the added
   time of build alone over raw buildx is bench/build.py's (a).

    python bench/setup.py [--quick] [--baseline REV]
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (
    BUSYBOX_IMAGE,
    REPO,
    STATS_HEADERS,
    VENV,
    MeasurementError,
    bench_parser,
    child_env,
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
    run_timed,
    secs,
    section,
    stats_row,
    table,
)
from registry_server import RegistryServer
from runner_format import parse_outputs

BASELINE = "e28ef51"
"""The last commit whose install.sh bootstraps pip into the venv and pip-installs the full lock."""
SETUP_GOAL, COLD_GOAL, CONSUME_RATIO_GOAL, CONSUME_GOAL = 1.0, 3.0, 2.0, 1.5


@dataclass
class Counts:
    setup: int
    consume: int
    build: int


FULL = Counts(setup=7, consume=9, build=7)
QUICK = Counts(setup=2, consume=3, build=2)


@dataclass
class Steps:
    """The seconds of each step of one run, in order, and the run's step outputs."""

    seconds: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


class Bench:
    def __init__(self, root: Path, baseline: Path) -> None:
        self.root = root
        self.baseline = baseline
        self.tool_cache = root / "tool-cache"
        self.tool_cache.mkdir()
        self.wheels_only = root / "wheels-only-tool-cache"
        """A tool cache that holds the wheel store and, at the start of each run, no finished install."""
        self.restored_cache = root / "restored-tool-cache"
        self.archive = root / "store.tar.zst"
        interpreter = Path(sys.executable).resolve().parent
        # The interpreter that runs the bench is the runner's python3, first on PATH: a shim (pyenv's) in front
        # of it would add a tenth of a second to every python3 the scripts start.
        self.path = f"{interpreter}{os.pathsep}{os.environ.get('PATH', '')}"
        self.base = child_env(PATH=self.path)
        self.count = 0
        self.marker = f"buildonce-bench-{secrets.token_hex(6)}"
        self.job: str | None = None
        """A job whose install is done: for consume alone, with the bytecode of its first run written."""

    def fresh(self, name: str) -> Path:
        self.count += 1
        directory = self.root / "runs" / f"{self.count:04d}-{name}"
        directory.mkdir(parents=True)
        return directory

    def step(self, steps: Steps, name: str, argv: Sequence[str], temp: Path, env: Mapping[str, str]) -> None:
        """One ``run:`` step: its own GITHUB_OUTPUT, the job's RUNNER_TEMP; its outputs join the run's.

        ``PIP_CONFIG_FILE`` in ``env`` drops this machine's other PIP_* settings too (a local index)."""
        output = temp / f"_output_{len(steps.seconds)}"
        output.write_text("")
        base = isolated(self.base) if "PIP_CONFIG_FILE" in env else self.base
        process_env = {**base, "RUNNER_TEMP": str(temp), "GITHUB_OUTPUT": str(output), **env}
        timed = run_timed(argv, env=process_env, cwd=temp, check=False)
        if timed.code != 0:
            raise MeasurementError(f"step {name!r} ({' '.join(argv)}) exited {timed.code}:\n{timed.output[-3000:]}")
        steps.seconds[name] = timed.seconds
        steps.outputs.update(parse_outputs(output.read_text()))

    def new_setup(self, steps: Steps, temp: Path, env: Mapping[str, str]) -> None:
        """The two set-up steps as the action runs them: the install step only when the plan step, with nothing
        to restore, did not install already."""
        script = str(REPO / "action" / "install.sh")
        self.step(steps, "find wheels", ["bash", script, "plan"], temp, env)
        if "python" not in steps.outputs:
            self.step(steps, "install", ["bash", script], temp, env)

    def old_setup(self, steps: Steps, temp: Path, env: Mapping[str, str]) -> None:
        self.step(steps, "install (today's)", ["bash", str(self.baseline / "action" / "install.sh")], temp, env)


def cold_pip(root: Path) -> dict[str, str]:
    """pip with an empty cache and no configuration but the CA bundle: every wheel comes from PyPI."""
    cache = Path(tempfile.mkdtemp(prefix="pip-cache-", dir=root))
    return {"PIP_CONFIG_FILE": os.devnull, "PIP_CACHE_DIR": str(cache)}


def isolated(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the PIP_* settings of this machine (a local index, find-links), except its CA bundle."""
    return {key: value for key, value in env.items() if not key.startswith("PIP_") or key == "PIP_CERT"}


def extract_baseline(revision: str, target: Path) -> None:
    """Today's install script, lock and sources, from git."""
    argv = ["git", "-C", str(REPO), "rev-parse", "--quiet", "--verify", f"{revision}^{{commit}}"]
    listed = subprocess.run(argv, capture_output=True, check=False)
    if listed.returncode != 0:
        raise MeasurementError(f"the baseline {revision} is not a commit of this repository (--baseline REV)")
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "action/install.sh", "requirements.lock", "src/buildonce"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)


# --- a) set-up alone -------------------------------------------------------------------------------------


def setup_variants(bench: Bench) -> list[tuple[str, Callable[[], float]]]:
    store_env = {"RUNNER_TOOL_CACHE": str(bench.tool_cache)}

    def on_machine() -> float:
        steps = Steps()
        bench.new_setup(steps, bench.fresh("store"), store_env)
        if steps.outputs.get("restore") != "false" or "key" in steps.outputs:
            raise MeasurementError(f"the finished install on the machine was not found: {steps.outputs}")
        return steps.total

    def restored() -> float:
        shutil.rmtree(bench.restored_cache, ignore_errors=True)
        bench.restored_cache.mkdir()
        steps = Steps()
        temp = bench.fresh("restored")
        env = {"RUNNER_TOOL_CACHE": str(bench.restored_cache)}
        bench.step(steps, "find wheels", ["bash", str(REPO / "action" / "install.sh"), "plan"], temp, env)
        if steps.outputs.get("restore") != "true":
            raise MeasurementError("an empty tool cache was found complete")
        unpack = ["tar", "--use-compress-program", "unzstd", "-x", "-P", "-f", str(bench.archive)]
        bench.step(steps, "restore (local part)", unpack, temp, {})
        if "python" in steps.outputs:
            raise MeasurementError("the plan step installed from a store that was still to be restored")
        bench.step(steps, "install", ["bash", str(REPO / "action" / "install.sh")], temp, env)
        return steps.total

    def pip_cache_warm() -> float:
        steps = Steps()
        bench.new_setup(steps, bench.fresh("pip-warm"), {})
        return steps.total

    def pip_cache_empty() -> float:
        steps = Steps()
        temp = bench.fresh("pip-cold")
        bench.new_setup(steps, temp, cold_pip(temp))
        return steps.total

    def old_warm() -> float:
        steps = Steps()
        bench.old_setup(steps, bench.fresh("old-warm"), {})
        return steps.total

    def old_cold() -> float:
        steps = Steps()
        temp = bench.fresh("old-cold")
        bench.old_setup(steps, temp, cold_pip(temp))
        return steps.total

    def pip_python() -> float:
        temp = bench.fresh("pip-python")
        venv = temp / "venv"
        lock = str(REPO / "requirements.lock")
        env = {**bench.base, "RUNNER_TEMP": str(temp)}
        made = run_timed(["python3", "-I", "-m", "venv", "--without-pip", str(venv)], env=env)
        pip = ["python3", "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet"]
        installed = run_timed([*pip, "--no-deps", "--require-hashes", "-r", lock], env=env)
        return made.seconds + installed.seconds

    def uv() -> float:
        temp = bench.fresh("uv")
        venv = temp / "venv"
        lock = str(REPO / "requirements.lock")
        env = {**bench.base, "RUNNER_TEMP": str(temp)}
        made = run_timed(["python3", "-I", "-m", "venv", "--without-pip", str(venv)], env=env)
        argv = [str(VENV / "bin" / "uv"), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python")]
        installed = run_timed([*argv, "--no-deps", "--require-hashes", "-r", lock], env=env)
        return made.seconds + installed.seconds

    return [
        ("today's install.sh, pip cache warm (baseline)", old_warm),
        ("today's install.sh, pip cache empty", old_cold),
        ("set-up, finished install on the machine", on_machine),
        ("set-up, wheel store on the machine, no install yet", lambda: wheels_on_machine(bench)),
        ("set-up, wheel store restored from a cache", restored),
        ("set-up, no store, pip cache warm", pip_cache_warm),
        ("set-up, no store, pip cache empty", pip_cache_empty),
        ("option: venv --without-pip + pip --python", pip_python),
        ("option: venv --without-pip + uv (on the machine)", uv),
    ]


def wheels_on_machine(bench: Bench) -> float:
    """The first job on a kept machine (or after a restore): the store is there, the install is made."""
    shutil.rmtree(bench.wheels_only / "buildonce", ignore_errors=True)
    steps = Steps()
    bench.new_setup(steps, bench.fresh("wheels"), {"RUNNER_TOOL_CACHE": str(bench.wheels_only)})
    if steps.outputs.get("restore") != "false" or "key" not in steps.outputs:
        raise MeasurementError(f"the store on the machine was not found complete: {steps.outputs}")
    return steps.total


def prepare_store(bench: Bench) -> None:
    """Fill the machine's store once, check a second install in one job, and pack the store as a cache would."""
    steps = Steps()
    temp = bench.fresh("prepare")
    bench.new_setup(steps, temp, {"RUNNER_TOOL_CACHE": str(bench.tool_cache)})
    again = Steps()
    bench.new_setup(again, temp, {"RUNNER_TOOL_CACHE": str(bench.tool_cache)})
    if again.outputs.get("restore") != "false":
        raise MeasurementError("a second install in the same job did not find the first")
    print(f"a second set-up in the same job (the install found there): {ms(again.total)}")
    # The store as actions/cache would restore it, under the path the plan step names for an empty tool cache.
    bench.restored_cache.mkdir()
    plan = Steps()
    bench.step(
        plan,
        "plan",
        ["bash", str(REPO / "action" / "install.sh"), "plan"],
        temp,
        {"RUNNER_TOOL_CACHE": str(bench.restored_cache)},
    )
    path = Path(plan.outputs["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(bench.tool_cache / "buildonce-wheels" / path.name, path)
    shutil.copytree(bench.tool_cache / "buildonce-wheels", bench.wheels_only / "buildonce-wheels")
    subprocess.run(
        ["tar", "--use-compress-program", "zstd", "-c", "-P", "-f", str(bench.archive), str(path)], check=True
    )
    print(f"the store as a cache entry: {bench.archive.stat().st_size / (1 << 20):.1f} MiB ({plan.outputs['key']})")


def measure_setup(bench: Bench, counts: Counts) -> dict[str, float]:
    section(
        f"a) set-up from a fresh RUNNER_TEMP: median of {counts.setup} interleaved runs "
        "(the store restored: its local extraction timed, not the download)"
    )
    variants = setup_variants(bench)
    samples = interleave(variants, counts.setup)
    base = median(samples[variants[0][0]])
    print(table(STATS_HEADERS, [stats_row(name, samples[name], base, secs) for name, _ in variants]))
    return {name: median(values) for name, values in samples.items()}


# --- b) the whole consume action -------------------------------------------------------------------------


@dataclass
class Image:
    registry: RegistryServer
    repository: str
    digest: str
    sha: str

    @property
    def tag(self) -> str:
        return self.sha[:7]

    @property
    def name(self) -> str:
        return f"{self.registry.address}/{self.repository}"


def github_env(temp: Path, sha: str) -> dict[str, str]:
    event_name, event, env = push_event(sha)
    event_file = temp / "event.json"
    event_file.write_text(json.dumps(event))
    return {
        "GITHUB_EVENT_NAME": event_name,
        "GITHUB_EVENT_PATH": str(event_file),
        "GITHUB_STEP_SUMMARY": str(temp / "summary"),
        "GITHUB_REPOSITORY": "acme/widget",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_RUN_ID": "777",
        "GITHUB_ACTOR": "octocat",
        "GITHUB_WORKSPACE": str(temp),
        **env,
    }


def consume_action(bench: Bench, image: Image, *, today: bool, installed: bool = True, by_tag: bool = False) -> Steps:
    """The consume action's steps; ``installed``: with the finished install on the machine, else with the
    wheel store alone; ``by_tag`` looks the image up by its tag (as from an event) instead of the digest."""
    remove_images([image.registry.address + "/"])
    temp = bench.fresh("consume-old" if today else "consume")
    tool_cache = bench.tool_cache
    if not installed:
        tool_cache = bench.wheels_only
        shutil.rmtree(tool_cache / "buildonce", ignore_errors=True)
    env = {**github_env(temp, image.sha), "RUNNER_TOOL_CACHE": str(tool_cache)}
    steps = Steps()
    check = ["bash", str(REPO / "action" / "check-engine.sh")]
    # Today's consume action checked buildx too; the new one asks for the docker CLI alone.
    bench.step(steps, "check engine", check if today else [*check, "pull"], temp, env)
    if today:
        bench.old_setup(steps, temp, env)
    else:
        bench.new_setup(steps, temp, env)
    inputs = {"INPUT_IMAGE": image.name, "INPUT_SHA": image.sha}
    inputs.update({"INPUT_TAG": image.tag} if by_tag else {"INPUT_DIGEST": image.digest})
    consume_env = {**env, **inputs, "BUILDONCE_PYTHON": steps.outputs["python"]}
    bench.step(steps, "consume", ["bash", str(REPO / "action" / "consume.sh")], temp, consume_env)
    if steps.outputs.get("digest") != image.digest:
        raise MeasurementError(f"consume gave {steps.outputs.get('digest')}, not {image.digest}")
    return steps


def push_small_image(bench: Bench, registry: RegistryServer, mebibytes: int) -> Image:
    context = bench.root / f"context-{mebibytes}"
    context.mkdir()
    (context / "hello.txt").write_text("hello\n")
    sha = fresh_sha()
    # A layer of its own (incompressible) that the engine must fetch on every pull: the image and the
    # build cache records that hold it are removed before each run. The busybox base stays, as on a runner
    # whose engine has the base images.
    (context / "Dockerfile").write_text(
        f"FROM {BUSYBOX_IMAGE}\nLABEL org.opencontainers.image.revision={sha}\n"
        f"RUN head -c {mebibytes << 20} /dev/urandom > /payload # {bench.marker}\nCOPY hello.txt /hello.txt\n"
    )
    repository = f"bench-setup-{secrets.token_hex(4)}"
    tag = f"{registry.address}/{repository}:{sha[:7]}"
    metadata = bench.root / "metadata.json"
    argv = ["docker", "buildx", "build", "--progress", "plain", "--push", "--tag", tag]
    run_timed([*argv, "--metadata-file", str(metadata), str(context)])
    digest = json.loads(metadata.read_text())["containerimage.digest"]
    remove_images([registry.address + "/"])
    prune_build_cache(bench.marker)
    return Image(registry, repository, digest, sha)


def measure_consume(bench: Bench, image: Image, counts: Counts, size: str) -> tuple[float, float, dict[str, float]]:
    reference = f"{image.name}@{image.digest}"
    new_runs: list[Steps] = []
    fresh_runs: list[Steps] = []

    def pull() -> float:
        remove_images([image.registry.address + "/"])
        return run_timed(["docker", "pull", "--quiet", reference]).seconds

    def new() -> float:
        steps = consume_action(bench, image, today=False)
        new_runs.append(steps)
        return steps.total

    def old() -> float:
        return consume_action(bench, image, today=True).total

    def by_tag() -> float:
        return consume_action(bench, image, today=False, by_tag=True).total

    def not_installed() -> float:
        steps = consume_action(bench, image, today=False, installed=False)
        fresh_runs.append(steps)
        return steps.total

    def alone() -> float:
        if bench.job is None:
            bench.job = consume_action(bench, image, today=False).outputs["python"]
        remove_images([image.registry.address + "/"])
        temp = bench.fresh("consume-alone")
        env = {**github_env(temp, image.sha), "BUILDONCE_PYTHON": bench.job}
        env.update({"INPUT_IMAGE": image.name, "INPUT_DIGEST": image.digest, "INPUT_SHA": image.sha})
        steps = Steps()
        bench.step(steps, "consume", ["bash", str(REPO / "action" / "consume.sh")], temp, env)
        return steps.total

    section(
        f"b) the whole consume action vs a bare docker pull of {size} ({reference.rsplit('/', 1)[-1][:30]}…): "
        f"median of {counts.consume} interleaved runs (image removed locally before each, untimed)"
    )
    variants: list[tuple[str, Callable[[], float]]] = [
        ("docker pull image@digest (baseline)", pull),
        ("consume action (finished install on the machine)", new),
        ("consume action, by tag instead of digest", by_tag),
        ("consume action (wheel store alone: install made)", not_installed),
        ("consume action with today's install.sh", old),
        ("consume step alone, a second time in a job", alone),
    ]
    samples = interleave(variants, counts.consume)
    base = median(samples[variants[0][0]])
    print(table(STATS_HEADERS, [stats_row(name, samples[name], base, secs) for name, _ in variants]))
    step_names = list(new_runs[0].seconds)
    per_step = {name: median([run.seconds[name] for run in new_runs]) for name in step_names}
    print(table(("consume action step (median)", "time"), [[name, ms(value)] for name, value in per_step.items()]))
    fresh_names = list(fresh_runs[0].seconds)
    fresh = {name: median([run.seconds[name] for run in fresh_runs]) for name in fresh_names}
    headers = ("consume action step, install made in the job (median)", "time")
    print(table(headers, [[name, ms(value)] for name, value in fresh.items()]))
    return median(samples[variants[1][0]]), base, per_step


# --- c) the whole build action ---------------------------------------------------------------------------


def measure_build(bench: Bench, registry: RegistryServer, counts: Counts) -> tuple[float, float]:
    context = bench.root / "build-context"
    context.mkdir()
    (context / "hello.txt").write_text("hello\n")
    (context / "Dockerfile").write_text("FROM scratch\nARG REVISION=unset\nLABEL rev=${REVISION}\nCOPY hello.txt /\n")
    repository = f"{registry.address}/bench-setup-build"

    def raw() -> float:
        sha = fresh_sha()
        argv = ["docker", "buildx", "build", "--progress", "plain", "--push", "--tag", f"{repository}:raw-{sha[:7]}"]
        return run_timed([*argv, "--build-arg", f"REVISION={sha}", str(context)]).seconds

    def action() -> float:
        sha = fresh_sha()
        temp = bench.fresh("build")
        env = {**github_env(temp, sha), "RUNNER_TOOL_CACHE": str(bench.tool_cache)}
        steps = Steps()
        bench.step(steps, "check engine", ["bash", str(REPO / "action" / "check-engine.sh")], temp, env)
        bench.new_setup(steps, temp, env)
        inputs = {
            "INPUT_IMAGES": repository,
            "INPUT_CONTEXT": str(context),
            "INPUT_ARTIFACT": "false",
            "INPUT_LOAD": "false",
            "INPUT_BUILD_ARGS": f"REVISION={sha}",
        }
        build_env = {**env, **inputs}
        bench.step(steps, "build", [steps.outputs["python"], "-I", "-m", "buildonce", "build"], temp, build_env)
        if not steps.outputs.get("digest"):
            raise MeasurementError(f"the build reported no digest: {steps.outputs}")
        return steps.total

    section(f"c) the whole build action vs raw buildx build --push: median of {counts.build} interleaved runs")
    variants: list[tuple[str, Callable[[], float]]] = [
        ("raw buildx build --push (baseline)", raw),
        ("build action", action),
    ]
    samples = interleave(variants, counts.build, warmup=1)
    base = median(samples[variants[0][0]])
    print(table(STATS_HEADERS, [stats_row(name, samples[name], base, secs) for name, _ in variants]))
    remove_images([registry.address + "/"])
    return median(samples[variants[1][0]]), base


def measure(counts: Counts, baseline: str) -> None:
    require_engine()
    made_busybox = ensure_busybox()
    with tempfile.TemporaryDirectory(prefix="buildonce-bench-setup-") as temp, ExitStack() as stack:
        root = Path(temp)
        bench = Bench(root, root / "baseline")
        extract_baseline(baseline, bench.baseline)
        registry = stack.enter_context(RegistryServer(root / "registry"))

        def cleanup() -> None:
            remove_images([registry.address + "/"])
            prune_build_cache(bench.marker)
            if made_busybox:
                docker("image", "rm", BUSYBOX_IMAGE, check=False)

        stack.callback(cleanup)
        section(f"setup: the wheel store, and a small image pushed to {registry.address}; baseline {baseline}")
        progress("filling the wheel store")
        prepare_store(bench)
        tiny = push_small_image(bench, registry, 1)
        small = push_small_image(bench, registry, 8)
        setup = measure_setup(bench, counts)
        consume, pull, per_step = measure_consume(bench, tiny, counts, "a tiny image (the base + 1 MiB)")
        bench.job = None
        small_consume, small_pull, _ = measure_consume(bench, small, counts, "a small image (the base + 8 MiB)")
        build, raw = measure_build(bench, registry, counts)
        names = [name for name, _ in setup_variants(bench)]
        old, machine, wheels, restored, cold = (setup[names[i]] for i in (0, 2, 3, 4, 6))
        consume_setup = per_step["find wheels"] + per_step.get("install", 0.0)
        print(
            f"\nRESULT setup: install on the machine {secs(machine)}, wheel store on the machine {secs(wheels)}, "
            f"restored {secs(restored)} (goal ≤ {SETUP_GOAL} s), "
            f"empty pip cache {secs(cold)} (goal ≤ {COLD_GOAL} s), today's {secs(old)} ({old / machine:.1f}x); "
            f"consume action, small image {secs(small_consume)} = {small_consume / small_pull:.2f}x docker pull "
            f"{secs(small_pull)}, tiny image {secs(consume)} = {consume / pull:.2f}x docker pull {secs(pull)} "
            f"(goal ≤ {CONSUME_RATIO_GOAL}x, ≤ {CONSUME_GOAL} s; its set-up {ms(consume_setup)}); "
            f"build action {secs(build)} = raw buildx {secs(raw)} + {ms(build - raw)}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument(
        "--baseline", default=BASELINE, help="the commit whose install.sh is today's (default %(default)s)"
    )
    args = parser.parse_args(argv)
    return run_bench("setup.py", args.quick, lambda: measure(QUICK if args.quick else FULL, args.baseline))


if __name__ == "__main__":
    sys.exit(main())
