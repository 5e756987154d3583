"""``buildonce prune``'s plan of a repository of 2,000 tags, next to a naive baseline, on a local registry.

A private Distribution registry is filled (over plain HTTP, no engine needed) with a mix of what a busy
repository holds: pull request and branch images of many ages, multi-platform indexes whose children some
share, the default branch's ``sha-*`` tags and releases, cosign ``.sig`` tags, build-key tags and images
buildonce did not push. A fault proxy in front of it, with no rules, counts every request.

Measured, interleaved: the whole ``buildonce prune`` process (a dry run: it lists, reads and plans) against
a baseline that lists the tags and then, tag by tag and one request at a time, fetches the manifest, every
child manifest an index lists, and the config that holds the labels, as a script over the registry API does.
**Goal: the plan of 2,000 tags in under 10 s**, and requests that grow with the tags, not with tags x
children: the same is measured on a repository of 1,000 tags of the same mix, and the requests per tag of the
two compared.

    python bench/prune.py [--quick]
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from benchlib import (
    STATS_HEADERS,
    VENV_PYTHON,
    MeasurementError,
    bench_parser,
    child_env,
    interleave,
    median,
    progress,
    run_bench,
    run_timed,
    secs,
    section,
    stats_row,
    table,
)
from events import FIXTURES
from faultproxy import FaultProxy
from registry_server import RegistryServer
from runner_format import parse_outputs

GOAL_SECONDS = 10.0
ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
NOW = datetime.now(timezone.utc)
WRITERS = 16


# --- filling the registry ------------------------------------------------------------------------


def _http(url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback registry
        return response.status, dict(response.headers), response.read()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Filler:
    def __init__(self, address: str, repository: str) -> None:
        self.base = f"http://{address}/v2/{repository}"
        self.layer = self.blob(b"one shared layer " * 64)
        self.empty = self.blob(b"{}")
        self.serial = itertools.count()

    def blob(self, data: bytes) -> dict[str, Any]:
        _, headers, _ = _http(f"{self.base}/blobs/uploads/", "POST")
        location = headers["Location"]
        location = location if location.startswith("http") else self.base.split("/v2/")[0] + location
        separator = "&" if "?" in location else "?"
        found = _digest(data)
        _http(f"{location}{separator}digest={found}", "PUT", data, {"Content-Type": "application/octet-stream"})
        return {"digest": found, "size": len(data)}

    def manifest(self, reference: str, body: dict[str, Any]) -> dict[str, Any]:
        raw = json.dumps(body, separators=(",", ":")).encode()
        _http(f"{self.base}/manifests/{reference or _digest(raw)}", "PUT", raw, {"Content-Type": body["mediaType"]})
        return {"mediaType": body["mediaType"], "digest": _digest(raw), "size": len(raw)}

    def image(self, tag: str, labels: dict[str, str], platform: str = "amd64") -> dict[str, Any]:
        # Every config its own (the tag is in it): two uploads of one blob at once can fail on Distribution.
        settings = {"Labels": labels, "Env": [f"TAG={tag}", f"N={next(self.serial)}"]}
        config = {"architecture": platform, "os": "linux", "config": settings, "rootfs": {"type": "layers"}}
        described = self.blob(json.dumps(config, sort_keys=True).encode())
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **described},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **self.layer}],
        }
        return self.manifest(tag, body)

    def index(self, tag: str, children: list[dict[str, Any]]) -> dict[str, Any]:
        return self.manifest(tag, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})


def _labels(kind: str, n: int, sha: str, age: timedelta) -> dict[str, str]:
    created = (NOW - age).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {"org.opencontainers.image.revision": sha, "org.opencontainers.image.created": created}
    if kind == "pr":
        labels |= {"dev.buildonce.pr.number": str(n), "dev.buildonce.pr.head-sha": sha}
    else:
        labels["dev.buildonce.branch"] = kind
    return labels


def fill(address: str, repository: str, tags: int, seed: int) -> dict[str, int]:
    """``tags`` tags of the mix described above; returns how many of each kind."""
    rng = random.Random(seed)  # noqa: S311 - a mix the same every run, not a secret
    filler = Filler(address, repository)
    unit = tags // 20
    jobs: list[tuple[str, Any]] = []

    def sha() -> str:
        return f"{rng.getrandbits(160):040x}"

    shared = [filler.image("", _labels("main", 0, sha(), timedelta(days=30)), "arm64") for _ in range(4)]

    def pr_image(n: int, hours: float) -> None:
        commit = sha()
        filler.image(f"pr-{n}-{commit[:7]}", _labels("pr", n, commit, timedelta(hours=hours)))

    def pr_index(n: int, hours: float) -> None:
        commit = sha()
        labels = _labels("pr", n, commit, timedelta(hours=hours))
        amd = {**filler.image("", labels), "platform": {"os": "linux", "architecture": "amd64"}}
        arm = {**rng.choice(shared), "platform": {"os": "linux", "architecture": "arm64"}}
        filler.index(f"pr-{n}-{commit[:7]}", [amd, arm])
        if rng.random() < 0.5:
            filler.manifest(f"buildkey-{hashlib.sha256(commit.encode()).hexdigest()}", _index_body(amd, arm))

    def branch_image(n: int, hours: float) -> None:
        commit = sha()
        filler.image(f"feature-{n}-{commit[:7]}", _labels(f"feature/{n}", n, commit, timedelta(hours=hours)))

    def main_image(_: int, hours: float) -> None:
        commit = sha()
        image = filler.image(f"sha-{commit[:7]}", _labels("main", 0, commit, timedelta(hours=hours)))
        filler.manifest(f"sha256-{image['digest'].removeprefix('sha256:')}.sig", _signature(filler, commit))

    def release(n: int, _: float) -> None:
        commit = sha()
        filler.image(f"1.{n}.0", _labels("main", 0, commit, timedelta(days=60)))

    def lookalike(n: int, _: float) -> None:
        filler.image(f"pr-{n}-{sha()[:7]}", {})

    kinds = (
        ("pr image", pr_image, 8 * unit),
        ("pr index", pr_index, 3 * unit),
        ("branch image", branch_image, 3 * unit),
        ("default-branch sha-* + .sig", main_image, 2 * unit),
        ("release", release, unit),
        ("look-alike", lookalike, unit),
    )
    counts: dict[str, int] = {}
    for name, make, count in kinds:
        counts[name] = count
        jobs += [(name, (make, rng.randrange(1, 60), rng.uniform(0.5, 400))) for _ in range(count)]
    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        list(pool.map(lambda job: job[1][0](job[1][1], job[1][2]), jobs))
    return counts


def _index_body(*children: dict[str, Any]) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(children)}


def _signature(filler: Filler, commit: str) -> dict[str, Any]:
    layer = filler.blob(json.dumps({"critical": {"image": commit}}).encode())
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **filler.empty},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", **layer}],
    }


# --- the two planners ----------------------------------------------------------------------------


def naive_plan(address: str, repository: str) -> int:
    """List the tags, then one by one: the manifest, each child an index lists, and the labels' config."""
    base = f"http://{address}/v2/{repository}"
    tags: list[str] = []
    url: str | None = f"{base}/tags/list?n=1000"
    while url:
        _, headers, body = _http(url)
        tags += json.loads(body).get("tags") or []
        link = headers.get("Link", "")
        url = f"http://{address}{link.split(';')[0].strip('<> ')}" if 'rel="next"' in link else None
    for tag in tags:
        _, _, raw = _http(f"{base}/manifests/{tag}", headers={"Accept": ACCEPT})
        body = json.loads(raw)
        first: dict[str, Any] | None = None
        for child in body.get("manifests", []):
            _, _, child_raw = _http(f"{base}/manifests/{child['digest']}", headers={"Accept": ACCEPT})
            first = first or json.loads(child_raw)
        image = first or body
        if "config" in image:
            _http(f"{base}/blobs/{image['config']['digest']}")
    return len(tags)


def buildonce_plan(image: str, workdir: Path) -> dict[str, str]:
    output = workdir / "output"
    output.write_text("")
    env = child_env(
        GITHUB_EVENT_NAME="schedule",
        GITHUB_EVENT_PATH=str(FIXTURES / "schedule.json"),
        GITHUB_OUTPUT=str(output),
        RUNNER_TEMP=str(workdir),
        INPUT_IMAGES=image,
        INPUT_APPLY="false",
        INPUT_DEFAULT_BRANCH="main",
    )
    run_timed([VENV_PYTHON, "-m", "buildonce", "prune"], env=env)
    return parse_outputs(output.read_text())


# --- the measurement -----------------------------------------------------------------------------

CANDIDATE = "buildonce prune (dry run)"
BASELINE = "naive: tag by tag"


def measure_size(size: int, registry: RegistryServer, proxy: FaultProxy, root: Path, reps: int) -> dict[str, Any]:
    """Time both planners straight against the registry (interleaved), then count the requests of one more run
    of each through the proxy: its one connection per request would weigh on the times."""
    repository = f"bench/prune-{size}"
    outputs: dict[str, str] = {}
    tags: list[int] = []

    def candidate(address: str = registry.address) -> float:
        started = time.perf_counter()
        outputs.update(buildonce_plan(f"{address}/{repository}", root))
        return time.perf_counter() - started

    def baseline(address: str = registry.address) -> float:
        started = time.perf_counter()
        tags.append(naive_plan(address, repository))
        return time.perf_counter() - started

    section(f"{size} tags")
    samples = interleave([(BASELINE, baseline), (CANDIDATE, candidate)], reps)
    base = median(samples[BASELINE])
    print(table(STATS_HEADERS, [stats_row(name, values, base, secs) for name, values in samples.items()]))
    requests: dict[str, int] = {"tags": tags[0]}
    for name, run in ((BASELINE, baseline), (CANDIDATE, candidate)):
        proxy.clear_log()
        run(proxy.address)
        requests[name] = len(proxy.requests)
    plan = json.loads(outputs["plan"])
    actions = {action: sum(1 for e in plan if e["action"] == action) for action in ("delete", "untag", "keep")}
    print(f"requests: {requests}; digests planned: {actions}; tags kept: {len(outputs['kept'].splitlines())}")
    return {"samples": samples, "requests": requests}


def measure(quick: bool) -> None:
    reps = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="buildonce-bench-prune-") as scratch:
        root = Path(scratch)
        with RegistryServer(root / "registry") as registry, FaultProxy(registry.address) as proxy:
            sizes = (1000, 2000)
            section("filling the registry")
            for size in sizes:
                started = time.perf_counter()
                counts = fill(registry.address, f"bench/prune-{size}", size, seed=size)
                progress(f"{size} tags in {time.perf_counter() - started:.1f} s: {counts}")
            results = {size: measure_size(size, registry, proxy, root, reps) for size in sizes}
            if not results[2000]["requests"]:
                raise MeasurementError("no requests were counted")
            section("scaling")
            rows = []
            for size in sizes:
                tags = results[size]["requests"]["tags"]
                for name in (BASELINE, CANDIDATE):
                    count = results[size]["requests"][name]
                    rows.append([name, str(tags), str(count), f"{count / tags:.2f}"])
            print(table(("variant", "tags", "requests", "per tag"), rows))
            mid = median(results[2000]["samples"][CANDIDATE])
            per_tag = [results[size]["requests"][CANDIDATE] / results[size]["requests"]["tags"] for size in sizes]
            naive_mid = median(results[2000]["samples"][BASELINE])
            print(
                f"RESULT prune plan of {results[2000]['requests']['tags']} tags: {mid:.2f} s "
                f"(goal < {GOAL_SECONDS:.0f} s, "
                f"{'met' if mid < GOAL_SECONDS else 'NOT met'}), naive {naive_mid:.2f} s; requests "
                f"{results[2000]['requests'][CANDIDATE]} vs naive "
                f"{results[2000]['requests'][BASELINE]}; requests per tag {per_tag[0]:.2f} at 1000 tags, "
                f"{per_tag[1]:.2f} at 2000"
            )


def main() -> int:
    args = bench_parser(__doc__).parse_args()
    return run_bench("prune.py", args.quick, lambda: measure(args.quick))


if __name__ == "__main__":
    raise SystemExit(main())
