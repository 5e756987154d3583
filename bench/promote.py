"""Promotion by build key against building the same image again, in the same run, on the example app.

The example app (examples/app) gets a RUN step that sleeps 10 s, FROM a base made locally from Debian's
busybox-static (nothing is pulled), in a git repository whose build context is ``app/``. Three variants,
interleaved, each a whole ``buildonce build`` process on a push to main of a fresh commit:

- **cold**: the RUN step's cache is busted (a fresh build-arg), so it runs and its layer is pushed;
- **warm**: the same content with BuildKit's cache warm, so the build is all cache hits and the push adds a
  new config and manifest only (``reuse: commit``: today's behaviour for another commit);
- **promotion**: the same content as an image tested earlier (built once, untimed): found by its build key
  and promoted (``reuse: content``), with no buildx run.

Every run goes through a FaultProxy (no faults) that logs the requests, so each variant's registry requests
and bytes uploaded (request bodies of PUT, POST and PATCH) are counted the same way.
Goal: promotion under 0.05x the cold build and under 0.5 s.

    python bench/promote.py [--quick]
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    BUSYBOX_IMAGE,
    REPO,
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
    remove_images,
    require_engine,
    run_bench,
    run_buildonce,
    section,
    table,
)
from events import payload
from faultproxy import FaultProxy
from registry_server import RegistryServer

SLEEP_SECONDS = 10
FULL_REPS = 5
QUICK_REPS = 1
UPLOADS = frozenset({"PUT", "POST", "PATCH"})
OFF = {"reuse": "off"}


def git(repo: Path, *args: str) -> None:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise MeasurementError(f"git {' '.join(args)}: {result.stderr.strip()}")


def example_repository(root: Path, marker: str) -> Path:
    """examples/app in a git repository as app/, with a RUN step that sleeps; committed."""
    repo = root / "repo"
    app = repo / "app"
    app.mkdir(parents=True)
    shutil.copy(REPO / "examples" / "app" / "index.html", app / "index.html")
    shutil.copy(REPO / "examples" / "app" / ".dockerignore", app / ".dockerignore")
    # The marker names this run's cache records, so that they alone are pruned at the end.
    (app / "Dockerfile").write_text(
        f"FROM {BUSYBOX_IMAGE}\nARG BUST=0\n"
        f'RUN echo "$BUST" > /bust && sleep {SLEEP_SECONDS} # {marker}\n'
        'COPY index.html /srv/www/index.html\nCMD ["cat", "/srv/www/index.html"]\n'
    )
    (repo / ".gitignore").write_text(".runner/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "bench@example.com")
    git(repo, "config", "user.name", "bench")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the example app")
    return repo


def main_push(sha: str) -> tuple[dict[str, Any], dict[str, str]]:
    data = payload("push-default")
    data["after"] = sha
    data["head_commit"] = {**data["head_commit"], "id": sha}
    return data, {"GITHUB_SHA": sha, "GITHUB_REF": "refs/heads/main"}


@dataclass
class Traffic:
    requests: int
    uploaded: int


@dataclass
class Bench:
    repo: Path
    image: str
    proxy: FaultProxy
    runs: dict[str, list[BuildonceRun]] = field(default_factory=dict)
    traffic: dict[str, list[Traffic]] = field(default_factory=dict)

    def build(self, name: str, inputs: dict[str, str]) -> BuildonceRun:
        data, env = main_push(fresh_sha())
        all_inputs = {"images": self.image, "context": "app", "artifact": "false", "timeout-minutes": "10", **inputs}
        self.proxy.clear_log()
        run = run_buildonce("build", self.repo, event_name="push", event=data, env=env, inputs=all_inputs)
        logged = self.proxy.requests
        uploaded = sum(int(request.header("Content-Length") or 0) for request in logged if request.method in UPLOADS)
        self.traffic.setdefault(name, []).append(Traffic(len(logged), uploaded))
        self.runs.setdefault(name, []).append(run)
        return run

    def variant(
        self, name: str, inputs: Callable[[], dict[str, str]], check: Callable[[BuildonceRun], str]
    ) -> Callable[[], float]:
        def run() -> float:
            done = self.build(name, inputs())
            problem = check(done)
            if problem:
                raise MeasurementError(f"{name}: {problem}:\n{done.log[-3000:]}")
            return done.seconds

        return run


def built(run: BuildonceRun) -> str:
    if run.outputs.get("promoted-from") or run.outputs.get("reused") != "false" or "Built sha256" not in run.log:
        return "expected a build"
    return ""


def promoted(tested: str) -> Callable[[BuildonceRun], str]:
    def check(run: BuildonceRun) -> str:
        if run.outputs.get("promoted-from") != tested or "Built sha256" in run.log:
            return f"expected a promotion of {tested}"
        return ""

    return check


def step_seconds(run: BuildonceRun) -> float | None:
    """The promotion inside the process: from the line that starts it to the verify that ends it."""
    start, end = run.first_match(r"promoting it to"), run.last("Verified in the registry")
    return end - start if start is not None and end is not None else None


def measure(reps: int) -> None:
    require_engine()
    made_busybox = ensure_busybox()
    marker = f"buildonce-bench-promote-{secrets.token_hex(6)}"
    with tempfile.TemporaryDirectory(prefix="buildonce-bench-promote-") as temp, ExitStack() as stack:
        root = Path(temp)
        server = stack.enter_context(RegistryServer(root / "registry"))
        proxy = stack.enter_context(FaultProxy(server.address))
        image = f"{proxy.address}/promote-{secrets.token_hex(4)}"

        def cleanup() -> None:
            remove_images([f"{proxy.address}/", f"{server.address}/"])
            prune_build_cache(marker)
            if made_busybox:
                docker("image", "rm", BUSYBOX_IMAGE, check=False)

        stack.callback(cleanup)
        bench = Bench(example_repository(root, marker), image, proxy)
        progress("building the tested image (untimed)")
        tested = bench.build("tested", {"build-args": "BUST=tested", "reuse": "off"})
        tested_digest = tested.outputs["digest"]
        if not tested.outputs.get("build-key"):
            raise MeasurementError(f"the tested image has no build key:\n{tested.log[-3000:]}")
        progress("warming the cache of the warm variant (untimed)")
        bench.build("warm-up", {"build-args": "BUST=warm", "reuse": "commit"})
        variants = [
            (
                "cold",
                bench.variant("cold", lambda: {"build-args": f"BUST={secrets.token_hex(8)}", "reuse": "off"}, built),
            ),
            ("warm", bench.variant("warm", lambda: {"build-args": "BUST=warm", "reuse": "commit"}, built)),
            ("promotion", bench.variant("promotion", lambda: {"build-args": "BUST=tested"}, promoted(tested_digest))),
        ]
        samples = interleave(variants, reps)
        report(bench, samples)


def report(bench: Bench, samples: dict[str, list[float]]) -> None:
    cold = median(samples["cold"])
    section(f"buildonce build of the example app with a {SLEEP_SECONDS} s RUN step, whole process (median)")
    rows = []
    for name in ("cold", "warm", "promotion"):
        traffic = bench.traffic[name]
        rows.append(
            [
                name,
                ms(median(samples[name])),
                f"{median(samples[name]) / cold:.3f}x",
                f"{median([t.requests for t in traffic]):.0f}",
                f"{median([t.uploaded for t in traffic]):.0f} B",
            ]
        )
    print(table(("variant", "time", "vs cold", "requests", "uploaded"), rows))
    steps = [seconds for seconds in (step_seconds(run) for run in bench.runs["promotion"]) if seconds is not None]
    promotion = median(samples["promotion"])
    step = median(steps) if steps else float("nan")
    print(f"\nthe promotion itself (look-up done, to verified): {ms(step)} median of {len(steps)}")
    print(
        f"\nRESULT promote: promotion {ms(promotion)} = {promotion / cold:.3f}x cold {ms(cold)} (goal < 0.05x, "
        f"< 500 ms); warm rebuild+push {ms(median(samples['warm']))}; promotion uploaded "
        f"{median([t.uploaded for t in bench.traffic['promotion']]):.0f} B in "
        f"{median([t.requests for t in bench.traffic['promotion']]):.0f} requests"
    )


def main(argv: list[str] | None = None) -> int:
    args = bench_parser(__doc__).parse_args(argv)
    return run_bench("promote.py", args.quick, lambda: measure(QUICK_REPS if args.quick else FULL_REPS))


if __name__ == "__main__":
    sys.exit(main())
