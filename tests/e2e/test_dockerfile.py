"""The Dockerfile: it builds with buildx from its two bases and a CA secret, and the image runs buildonce.

Nothing is pulled. The bases the Dockerfile pins by digest are replaced through its build-args with local
stand-ins from ``base_images``: a Debian root with Debian's python3 (made with debootstrap once per engine)
and the host's own docker CLI and buildx plugin. The CA bundle the host trusts goes in as the ``ca-bundle``
secret, as a user behind a TLS-inspecting proxy would give it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import base_images
import pytest
import registry_api
from events import FIXTURES, runner_env
from registry_server import RegistryServer
from runner_format import parse_outputs

from buildonce import __version__

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
SOCKET = "/var/run/docker.sock"
PINNED = re.compile(r"^[a-z0-9./_-]+:[\w.-]+@sha256:[0-9a-f]{64}$")


def _missing(problem: str) -> NoReturn:
    """Where the engine must run (CI, scripts/test) a missing tool fails the run; elsewhere it skips."""
    if os.environ.get("CI", "").lower() == "true" or os.environ.get("BUILDONCE_REQUIRE_ENGINE") == "1":
        pytest.fail(problem)
    pytest.skip(problem)


def _ca_bundle() -> Path | None:
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def buildonce_image(engine: None) -> Iterator[str]:
    """The Dockerfile built once per session under a tag of its own, removed at the end (layers stay cached)."""
    try:
        python_base = base_images.python_base()
        docker_cli = base_images.docker_cli_image()
    except base_images.MissingToolError as exc:
        _missing(str(exc))
    tag = f"buildonce-test/buildonce:e2e-{uuid.uuid4().hex[:10]}"
    # The default builder is the engine's own (docker driver): it sees the local bases, and --load is cheap.
    argv = ["docker", "buildx", "build", "--builder", "default", "--load", "--tag", tag]
    argv += ["--build-arg", f"BASE_IMAGE={python_base}", "--build-arg", f"DOCKER_CLI_IMAGE={docker_cli}"]
    bundle = _ca_bundle()
    if bundle is not None:
        argv += ["--secret", f"id=ca-bundle,src={bundle}"]
    result = subprocess.run([*argv, str(ROOT)], capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-6000:]
    yield tag
    subprocess.run(["docker", "image", "rm", tag], capture_output=True, timeout=120, check=False)


def docker_run(
    image: str,
    args: Sequence[str],
    *,
    entrypoint: str | None = None,
    workspace: Path | None = None,
    env: Mapping[str, str] | None = None,
    options: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """``docker run`` as a CI system runs a container step: the socket, and the workspace at its own path."""
    argv = ["docker", "run", "--rm", "-v", f"{SOCKET}:{SOCKET}", *options]
    if workspace is not None:
        argv += ["-v", f"{workspace}:{workspace}", "-w", str(workspace)]
    for name, value in (env or {}).items():
        argv += ["-e", f"{name}={value}"]
    if entrypoint is not None:
        argv += ["--entrypoint", entrypoint]
    return subprocess.run([*argv, image, *args], capture_output=True, text=True, timeout=300, check=False)


def pull_request_workspace(workspace: Path) -> dict[str, str]:
    """A workspace with the pull-request payload and runner files, and the GITHUB_* variables pointing at them."""
    workspace.mkdir(parents=True, exist_ok=True)
    event = workspace / "event.json"
    shutil.copyfile(FIXTURES / "pull-request.json", event)
    for name in ("output", "summary"):
        (workspace / name).write_text("")
    runner = runner_env("pull-request")
    return {
        **{name: runner[name] for name in ("GITHUB_EVENT_NAME", "GITHUB_SHA", "GITHUB_REF", "GITHUB_REPOSITORY")},
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_OUTPUT": str(workspace / "output"),
        "GITHUB_STEP_SUMMARY": str(workspace / "summary"),
    }


def test_version(buildonce_image: str) -> None:
    result = docker_run(buildonce_image, ["--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"buildonce {__version__}"


def test_docker_cli_and_buildx_reach_the_engine(buildonce_image: str) -> None:
    buildx = docker_run(buildonce_image, ["buildx", "version"], entrypoint="docker")
    assert buildx.returncode == 0, buildx.stderr
    assert "buildx" in buildx.stdout
    inside = docker_run(buildonce_image, ["version", "--format", "{{.Server.Version}}"], entrypoint="docker")
    assert inside.returncode == 0, inside.stderr
    outside = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, check=True
    )
    assert inside.stdout.strip() == outside.stdout.strip()


def test_image_config(buildonce_image: str) -> None:
    inspect = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config}}", buildonce_image],
        capture_output=True,
        text=True,
        check=True,
    )
    config = json.loads(inspect.stdout)
    assert config["Entrypoint"] == ["buildonce"]
    assert not config.get("WorkingDir"), "the runner sets the working directory; the image must not rely on one"
    env = dict(entry.split("=", 1) for entry in config["Env"])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    # The CA secret was only mounted for the download step: no variable or file of it is left in the image.
    assert not {"PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"} & env.keys()
    leftover = docker_run(buildonce_image, ["-c", "test ! -e /run/secrets/ca-bundle"], entrypoint="/bin/sh")
    assert leftover.returncode == 0, "the ca-bundle secret is in the image"


def test_plan_in_the_container(buildonce_image: str, tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    env = {**pull_request_workspace(workspace), "INPUT_IMAGES": "ghcr.io/acme/widget"}
    result = docker_run(buildonce_image, ["plan"], workspace=workspace, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "immutable tag: pr-123-abc1234" in result.stdout
    outputs = parse_outputs((workspace / "output").read_text())
    assert outputs["immutable-tag"] == "pr-123-abc1234"
    assert outputs["tags"] == "ghcr.io/acme/widget:pr-123-abc1234"
    assert outputs["tag-names"] == "pr-123-abc1234"
    assert outputs["version"] == "pr-123"
    assert json.loads(outputs["json"])["tags"] == ["ghcr.io/acme/widget:pr-123-abc1234"]
    assert "org.opencontainers.image.revision=" + "5" * 40 in outputs["labels"].splitlines()
    # plan touches nothing: the workspace holds what was put there, and no bytecode.
    assert sorted(path.name for path in workspace.iterdir()) == ["event.json", "output", "summary"]


def test_build_in_the_container_pushes_through_the_mounted_socket(
    buildonce_image: str, registry: RegistryServer, tmp_path: Path
) -> None:
    workspace = tmp_path / "workspace"
    env = pull_request_workspace(workspace)
    (workspace / "hello.txt").write_text("hello from a container step\n")
    (workspace / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    (workspace / ".runner").mkdir()
    repository = f"in-container-{uuid.uuid4().hex[:10]}"
    env |= {"INPUT_IMAGES": f"{registry.address}/{repository}", "RUNNER_TEMP": str(workspace / ".runner")}
    # The test registry listens on the host's loopback; a runner's registry would need no --network host.
    result = docker_run(buildonce_image, ["build"], workspace=workspace, env=env, options=["--network", "host"])
    loaded = f"{registry.address}/{repository}:pr-123-abc1234"
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        outputs = parse_outputs((workspace / "output").read_text())
        digest = outputs["digest"]
        assert digest.startswith("sha256:")
        assert outputs["pushed"] == "true"
        assert outputs["image"] == f"{registry.address}/{repository}@{digest}"
        assert registry_api.digest_of(registry.address, repository, "pr-123-abc1234") == digest
    finally:
        subprocess.run(["docker", "image", "rm", loaded], capture_output=True, timeout=120, check=False)


def _arg_default(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, f"the Dockerfile has no ARG {name} with a default"
    return match.group(1)


@pytest.mark.parametrize("name", ["BASE_IMAGE", "DOCKER_CLI_IMAGE"])
def test_the_dockerfile_pins_its_bases_by_digest(name: str) -> None:
    assert PINNED.match(_arg_default(name)), _arg_default(name)


def test_debian_mirror_is_read_from_the_system_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    assert base_images.debian_mirror(tmp_path) == base_images.DEFAULT_MIRROR
    (tmp_path / "sources.list").write_text("deb [signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n")
    assert base_images.debian_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm\n"
    )
    assert base_images.debian_mirror(tmp_path) == "http://deb.example/debian"
