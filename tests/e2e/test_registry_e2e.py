"""The registry client against the real Distribution registry, with images the real buildx pushed."""

from __future__ import annotations

import json
import os
import subprocess
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import registry_api
from registry_server import RegistryServer

from buildonce.docker.config import Credentials
from buildonce.errors import RegistryError
from buildonce.oci import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from buildonce.references import ImageName, Reference
from buildonce.registry import http as transport
from buildonce.registry.client import Registry

BOTH = "linux/amd64,linux/arm64"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def context_dir(directory: Path, text: str, *, random_bytes: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hello.txt").write_text(text)
    copies = "COPY hello.txt /hello.txt\n"
    if random_bytes:
        # Random data does not compress, so the layer stays this big in the registry.
        (directory / "big.bin").write_bytes(os.urandom(random_bytes))
        copies += "COPY big.bin /big.bin\n"
    (directory / "Dockerfile").write_text("FROM scratch\n" + copies)
    return directory


def run(argv: list[str], *, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    result = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=300, check=False, env={**os.environ, **(env or {})}
    )
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def buildx(context: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Build ``context``; returns the digest buildx reports in its metadata file."""
    metadata = context / "metadata.json"
    run(["docker", "buildx", "build", "--metadata-file", str(metadata), *args, str(context)], env=env)
    digest: str = json.loads(metadata.read_text())["containerimage.digest"]
    return digest


def push(context: Path, reference: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Build and push with buildx; the engine's copy is removed again, the registry's is what counts."""
    try:
        return buildx(context, *args, "--push", "-t", reference, env=env)
    finally:
        subprocess.run(["docker", "image", "rm", reference], capture_output=True, check=False)


def docker_login(server: RegistryServer, config: Path) -> dict[str, str]:
    """A Docker config directory logged in to ``server``; the password goes through stdin."""
    user, password = next(iter(server.users.items()))
    env = {"DOCKER_CONFIG": str(config)}
    run(["docker", "login", server.address, "-u", user, "--password-stdin"], env=env, stdin=password)
    return env


@dataclass(frozen=True)
class Pushed:
    image: ImageName
    tag: str
    digest: str


@pytest.fixture(scope="module")
def multi(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    """A two-platform image with labels, pushed by buildx (attestations included)."""
    image = ImageName(f"{registry.address}/{unique('multi')}")
    context = context_dir(tmp_path_factory.mktemp("multi"), "multi")
    labels = ["--label", "org.opencontainers.image.revision=" + "a" * 40, "--label", "dev.buildonce.test=yes"]
    digest = push(context, image.with_tag("v1"), "--platform", BOTH, *labels)
    return Pushed(image, "v1", digest)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Registry]:
    with Registry(docker_config=tmp_path / "no-docker-config") as registry:
        yield registry


def test_resolve_a_multi_platform_tag(multi: Pushed, client: Registry, registry: RegistryServer) -> None:
    assert client.resolve(multi.image, multi.tag) == multi.digest
    assert client.resolve(multi.image, multi.digest) == multi.digest
    assert registry_api.digest_of(registry.address, multi.image.repository, multi.tag) == multi.digest
    manifest = client.get_manifest(multi.image, multi.tag)
    assert manifest is not None
    assert manifest.media_type == OCI_INDEX
    assert manifest.digest == multi.digest


def test_resolve_a_single_platform_tag(registry: RegistryServer, client: Registry, tmp_path: Path) -> None:
    image = ImageName(f"{registry.address}/{unique('single')}")
    context = context_dir(tmp_path, "single")
    digest = push(context, image.with_tag("v1"), "--platform", "linux/amd64", "--provenance=false")
    assert client.resolve(image, "v1") == digest
    manifest = client.get_manifest(image, "v1")
    assert manifest is not None
    assert manifest.media_type in (OCI_MANIFEST, DOCKER_MANIFEST)
    assert client.labels(image, "v1") == {}


def test_missing_tags_and_repositories_resolve_to_none(multi: Pushed, client: Registry) -> None:
    assert client.resolve(multi.image, "no-such-tag") is None
    assert client.resolve(multi.image, "sha256:" + "0" * 64) is None
    missing = ImageName(f"{multi.image.registry}/{unique('missing')}")
    assert client.resolve(missing, "v1") is None
    assert client.get_manifest(missing, "v1") is None
    assert client.labels(missing, "v1") is None


def test_labels_and_platform_configs(multi: Pushed, client: Registry) -> None:
    labels = client.labels(multi.image, multi.tag)
    assert labels is not None
    assert labels["org.opencontainers.image.revision"] == "a" * 40
    assert labels["dev.buildonce.test"] == "yes"
    assert client.labels(multi.image, multi.digest) == labels
    for platform in BOTH.split(","):
        config = client.image_config(multi.image, multi.tag, platform)
        assert config is not None
        assert f"{config['os']}/{config['architecture']}" == platform


def test_put_manifest_retags(multi: Pushed, client: Registry) -> None:
    manifest = client.get_manifest(multi.image, multi.tag)
    assert manifest is not None
    assert client.put_manifest(multi.image, "retagged", manifest) == multi.digest
    assert client.resolve(multi.image, "retagged") == multi.digest
    assert client.put_manifest(multi.image, "retagged", manifest) == multi.digest  # again: nothing changes


def _layout(tmp_path: Path, *, random_bytes: int = 0) -> tuple[Path, str]:
    context = context_dir(tmp_path / "context", unique("layout"), random_bytes=random_bytes)
    layout = tmp_path / "layout"
    digest = buildx(context, "--platform", BOTH, "--output", f"type=oci,dest={layout},tar=false")
    return layout, digest


def test_push_layout_to_two_registries(
    registry: RegistryServer, auth_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, built = _layout(tmp_path)
    index_entry = json.loads((layout / "index.json").read_text())["manifests"][0]
    assert index_entry["digest"] == built
    first, second = ImageName(f"{registry.address}/{unique('one')}"), ImageName(f"{registry.address}/{unique('two')}")
    private = ImageName(f"{auth_registry.address}/{unique('private')}")
    references = [Reference(first, "v1"), Reference(first, "latest"), Reference(second, "v1"), Reference(private, "v1")]
    user, password = next(iter(auth_registry.users.items()))
    sent: list[tuple[str, str, int]] = []

    with Registry(logins={auth_registry.address: Credentials(user, password)}, docker_config=tmp_path) as client:
        request = transport.bounded_request

        def record(*args: Any, **kwargs: Any) -> transport.Response:
            response = request(*args, **kwargs)
            sent.append((response.method, response.url, response.status_code))
            return response

        monkeypatch.setattr(transport, "bounded_request", record)  # a look at the traffic: which blobs were mounted
        assert client.push_layout(layout, references) == built
        for ref in references:
            assert client.resolve(ref.image, ref.tag) == built

        mounts = [url for method, url, status in sent if method == "POST" and "mount=" in url and status == 201]
        assert mounts
        assert all(f"/v2/{second.repository}/" in url for url in mounts)
        assert not [
            url
            for method, url, _ in sent
            if method == "POST" and f"/v2/{second.repository}/" in url and "mount=" not in url
        ]

        sent.clear()
        assert client.push_layout(layout, references) == built  # a retry after success is harmless
        assert not [url for method, url, _ in sent if method in ("POST", "PATCH")]

    assert registry_api.platforms(registry.address, second.repository, "v1") == ["linux/amd64", "linux/arm64"]
    pulled = [first.with_digest(built), private.with_digest(built)]
    env = docker_login(auth_registry, tmp_path / "pull-config")
    try:
        for reference in pulled:
            run(["docker", "pull", "-q", reference], env=env)
            repo_digests = run(["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", reference])
            assert reference in json.loads(repo_digests)
    finally:
        subprocess.run(["docker", "image", "rm", *pulled], capture_output=True, check=False)


def test_push_layout_streams_a_large_layer(registry: RegistryServer, client: Registry, tmp_path: Path) -> None:
    size = 24 << 20
    layout, built = _layout(tmp_path, random_bytes=size)
    image = ImageName(f"{registry.address}/{unique('large')}")
    tracemalloc.start()
    try:
        assert client.push_layout(layout, [Reference(image, "v1")]) == built
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"push_layout held {peak} bytes at once for a {size}-byte layer"
    configs = registry_api.configs(registry.address, image.repository, "v1")
    assert len(configs) == 2


def test_docker_login_credentials_are_used(auth_registry: RegistryServer, tmp_path: Path) -> None:
    config = tmp_path / "docker-config"
    env = docker_login(auth_registry, config)
    image = ImageName(f"{auth_registry.address}/{unique('login')}")
    digest = push(
        context_dir(tmp_path / "context", "login"), image.with_tag("v1"), "--platform", "linux/amd64", env=env
    )
    with Registry(docker_config=config) as client:
        assert client.resolve(image, "v1") == digest
        assert client.labels(image, "v1") == {}


def test_wrong_password_is_permanent_and_not_shown(auth_registry: RegistryServer, tmp_path: Path) -> None:
    user, _ = next(iter(auth_registry.users.items()))
    wrong = "wrong-password-" + uuid.uuid4().hex
    image = ImageName(f"{auth_registry.address}/{unique('denied')}")
    client = Registry(logins={auth_registry.address: Credentials(user, wrong)}, docker_config=tmp_path)
    with client, pytest.raises(RegistryError) as caught:
        client.resolve(image, "v1")
    error = caught.value
    assert not error.transient
    assert "rejected" in str(error)
    assert auth_registry.address in str(error)
    assert wrong not in str(error)


def test_no_credentials_for_the_auth_registry(auth_registry: RegistryServer, client: Registry) -> None:
    with pytest.raises(RegistryError, match="No credentials were found") as caught:
        client.resolve(ImageName(f"{auth_registry.address}/{unique('anon')}"), "v1")
    assert not caught.value.transient
