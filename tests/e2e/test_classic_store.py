"""``buildonce build`` against an engine with the classic image store, as on GitHub's hosted runners.

There the docker driver builds into the classic store, which makes a new manifest at push time: the digest
comes from the push, not from the build's metadata. A second, private dockerd with the classic store runs
beside the main engine for this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import registry_api
from action_run import Run, run_on_fixture
from build_contexts import scratch_context, unique
from events import payload, runner_env
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


# --- artifacts of the classic store: the tar holds the config, the build adds the pushed manifest ---------

SHA = runner_env("push-default")["GITHUB_SHA"]
OTHER_SHA = "9876543" + "b" * 33


def build_commit(workdir: Path, image: str, host: str, sha: str) -> dict[str, str]:
    """A push to main of ``sha``, pushed and saved as an artifact by the classic store's engine."""
    data = payload("push-default")
    data["after"] = sha
    inputs = {"images": image, "retry-wait-seconds": "0.2", "artifact": "true"}
    scratch_context(workdir, f"commit {sha}")
    env = {"DOCKER_HOST": host, "GITHUB_SHA": sha}
    run = run_on_fixture("build", workdir, "push-default", inputs, env=env, data=data)
    assert run.code == 0, run.log
    assert run.outputs["imageid"] != run.outputs["digest"]
    return run.outputs


def consume_pinned(workdir: Path, image: str, digest: str, artifact: str, host: str | None) -> Run:
    inputs = {"image": image, "digest": digest, "sha": SHA, "source": "artifact", "artifact-path": artifact}
    return run_on_fixture("consume", workdir, "push-default", inputs, env={"DOCKER_HOST": host} if host else {})


def image_id(reference: str, host: str | None) -> str:
    argv = ["docker", *(["-H", host] if host else []), "image", "inspect", "--format", "{{.Id}}", reference]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("consumer", ["classic", "containerd"])
def test_a_pinned_digest_is_proven_from_a_classic_stores_artifact(
    classic_engine: str, registry: RegistryServer, tmp_path: Path, consumer: str
) -> None:
    image = f"{registry.address}/{unique('classic-pin')}"
    built = build_commit(tmp_path / "build", image, classic_engine, SHA)
    host = classic_engine if consumer == "classic" else None
    run = consume_pinned(tmp_path / "consume", image, built["digest"], built["artifact-path"], host)
    assert run.code == 0, run.log
    assert (run.outputs["source"], run.outputs["digest"]) == ("artifact", built["digest"])
    loaded = image_id(run.outputs["image"], host)
    if consumer == "classic":
        assert loaded == built["imageid"]  # the classic store names it by its config
    else:
        assert loaded != built["digest"]  # the containerd store, by the tar's own manifest of it


def test_a_pinned_digest_is_refused_from_another_builds_classic_artifact(
    classic_engine: str, registry: RegistryServer, tmp_path: Path
) -> None:
    image = f"{registry.address}/{unique('classic-pin-wrong')}"
    pinned = build_commit(tmp_path / "a", image, classic_engine, SHA)["digest"]
    other = build_commit(tmp_path / "b", image, classic_engine, OTHER_SHA)
    run = consume_pinned(tmp_path / "consume", image, pinned, other["artifact-path"], classic_engine)
    assert run.code == 1, run.log
    (error,) = run.errors()
    assert f"does not hold {image}@{pinned}" in error
    assert other["digest"] in error
    assert other["imageid"] in error
    assert run.outputs == {}


def test_a_classic_tar_without_the_pushed_manifest_cannot_prove_a_pin(
    classic_engine: str, registry: RegistryServer, tmp_path: Path
) -> None:
    image = f"{registry.address}/{unique('classic-bare')}"
    built = build_commit(tmp_path / "build", image, classic_engine, SHA)
    # docker save by hand: the image is there, the registry's manifest of it is not.
    bare = tmp_path / "bare.tar"
    reference = f"{image}:sha-0123456"
    subprocess.run(["docker", "-H", classic_engine, "save", "-o", str(bare), reference], check=True)
    (tmp_path / "bare.tar.sha256").write_text(f"{hashlib.sha256(bare.read_bytes()).hexdigest()}  bare.tar\n")
    run = consume_pinned(tmp_path / "pinned", image, built["digest"], str(bare), classic_engine)
    assert run.code == 1, run.log
    (error,) = run.errors()
    assert f"carries no manifest that hashes to {built['digest']}" in error
    # Without a pin the tar's own image is what is consumed, and it says which one that is.
    inputs = {"image": image, "tag": "sha-0123456", "sha": SHA, "source": "artifact", "artifact-path": str(bare)}
    plain = run_on_fixture("consume", tmp_path / "plain", "push-default", inputs, env={"DOCKER_HOST": classic_engine})
    assert plain.code == 0, plain.log
    assert plain.outputs["digest"] == built["imageid"] == image_id(reference, classic_engine)


def test_a_pinned_index_from_a_containerd_stores_artifact_loads_into_the_classic_store(
    classic_engine: str, registry: RegistryServer, tmp_path: Path
) -> None:
    image = f"{registry.address}/{unique('containerd-to-classic')}"
    scratch_context(tmp_path / "build", "from the containerd store")
    inputs = {"images": image, "retry-wait-seconds": "0.2", "artifact": "true"}
    built = run_on_fixture("build", tmp_path / "build", "push-default", inputs)
    assert built.code == 0, built.log
    pinned = built.outputs["digest"]
    (config,) = registry_api.configs(registry.address, repo_of(image), pinned)
    run = consume_pinned(tmp_path / "consume", image, pinned, built.outputs["artifact-path"], classic_engine)
    assert run.code == 0, run.log
    assert run.outputs["digest"] == pinned
    # The classic store loads the platform image's config from the tar's manifest.json, named by its digest.
    argv = ["docker", "-H", classic_engine, "image", "inspect", "--format", "{{json .Config.Labels}}"]
    loaded = subprocess.run(
        [*argv, run.outputs["image"]],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(loaded.stdout) == config["config"]["Labels"]
    assert image_id(run.outputs["image"], classic_engine) != pinned


def repo_of(image: str) -> str:
    return image.split("/", 1)[1]
