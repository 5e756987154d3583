"""``buildonce build`` against an engine with the classic image store, as on GitHub's hosted runners.

There the docker driver builds into the classic store, which makes a new manifest at push time: the digest
comes from the push, not from the build's metadata. A second, private dockerd with the classic store runs
beside the main engine for this module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import registry_api
from action_run import run_on_fixture
from build_contexts import scratch_context, unique
from events import runner_env
from races import build_all, check_round, commit
from registry_server import RegistryServer

DEV_DOCKERD = Path("/var/lib/buildonce-dev/tools/root/usr/sbin/dockerd")


def _dockerd() -> str | None:
    found = shutil.which("dockerd")
    if found:
        return found
    return str(DEV_DOCKERD) if DEV_DOCKERD.is_file() else None


@pytest.fixture(scope="module")
def classic_engine(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DOCKER_HOST of a private dockerd with the classic (overlay2) image store."""
    dockerd = _dockerd()
    if dockerd is None or os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("no dockerd binary or ip(8) to start a second engine with (scripts/dev-env installs them as root)")
    root = tmp_path_factory.mktemp("classic-engine")
    # A short path: the daemon's unix sockets must fit in 108 bytes.
    run = Path(f"/run/bo-classic-{os.getpid()}")
    run.mkdir(parents=True, exist_ok=True)
    socket = run / "docker.sock"
    config = root / "daemon.json"
    # A bridge of its own: with "bridge": "none" dockerd deletes docker0, which the main engine needs.
    # No iptables rules either: this engine only builds FROM scratch and pushes to loopback.
    bridge = f"bo{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True, capture_output=True)
    config.write_text(json.dumps({"features": {"containerd-snapshotter": False}, "bridge": bridge, "iptables": False}))
    log = (root / "dockerd.log").open("wb")
    process = subprocess.Popen(
        [
            dockerd,
            "--config-file",
            str(config),
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(run / "exec"),
            "--pidfile",
            str(run / "dockerd.pid"),
            "-H",
            f"unix://{socket}",
        ],
        stdout=log,
        stderr=log,
        env={**os.environ, "PATH": f"{Path(dockerd).parent}:{os.environ.get('PATH', '')}"},
    )
    host = f"unix://{socket}"
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "-H", host, "info"], capture_output=True, check=False).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the classic-store dockerd did not start; see {root / 'dockerd.log'}")
            time.sleep(0.3)
        info = subprocess.run(
            ["docker", "-H", host, "info", "--format", "{{json .DriverStatus}}"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "io.containerd.snapshotter" not in info.stdout
        yield host
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        shutil.rmtree(run, ignore_errors=True)
        subprocess.run(["ip", "link", "delete", bridge], check=False, capture_output=True)


def build(
    workdir: Path, image: str, host: str, inputs: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    inputs = {"images": image, "retry-wait-seconds": "0.2", **(inputs or {})}
    run = run_on_fixture("build", workdir, "push-default", inputs, env={"DOCKER_HOST": host})
    return run.code, run.outputs, run.log


def test_digest_comes_from_the_push_and_the_registry_serves_it(
    classic_engine: str, registry: RegistryServer, tmp_path: Path
) -> None:
    repo = unique("classic")
    code, outputs, log = build(scratch_context(tmp_path), f"{registry.address}/{repo}", classic_engine)
    assert code == 0, log
    digest = outputs["digest"]
    for tag in ("latest", "sha-0123456"):
        assert registry_api.digest_of(registry.address, repo, tag) == digest
    # The classic store's image id is the config digest, which is not what the registry serves.
    assert outputs["imageid"] != digest
    (config,) = registry_api.configs(registry.address, repo, digest)
    assert config["config"]["Labels"]["org.opencontainers.image.revision"] == runner_env("push-default")["GITHUB_SHA"]


def test_multi_platform_on_the_classic_store_is_refused_before_building(
    classic_engine: str, registry: RegistryServer, tmp_path: Path
) -> None:
    repo = unique("classic-multi")
    code, outputs, log = build(
        scratch_context(tmp_path),
        f"{registry.address}/{repo}",
        classic_engine,
        {"platforms": "linux/amd64,linux/arm64"},
    )
    assert code == 1
    assert "classic image store" in log
    assert "::group::Build" not in log
    assert registry_api.tags(registry.address, repo) == []
    assert outputs == {}


def test_builds_of_different_commits_at_once_keep_their_own_images(
    classic_engine: str, registry: RegistryServer, tmp_path: Path
) -> None:
    repository = unique("classic-race")
    for round_ in range(2):
        shas = [commit(0x80 + round_, index) for index in range(3)]
        runs = build_all(
            tmp_path, f"{registry.address}/{repository}", shas, {"load": "false"}, {"DOCKER_HOST": classic_engine}
        )
        assert len(check_round(registry, repository, shas, runs)) == len(shas)
