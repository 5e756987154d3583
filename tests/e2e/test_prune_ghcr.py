"""Prune through the GitHub Packages REST API (GHCR's way of deleting), against the loopback fake of that API
in tests/support/ghcr_api.py over a real Distribution registry, and the API client's answers to its faults."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import oci_push
import pytest
import registry_api
from build_contexts import unique
from ghcr_api import FakePackages, GhcrApi
from prune_images import DAY, Run, build_pr, build_push, planned, run_prune
from registry_server import RegistryServer

from buildonce.errors import RegistryError
from buildonce.github.packages import Package, PackagesAPI
from buildonce.references import parse_image_name

TOKEN = "ghs_not-a-real-token-1234"


@pytest.fixture(scope="module")
def prune_registry(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("ghcr-registry")) as server:
        yield server


@pytest.fixture
def ghcr(prune_registry: RegistryServer) -> Iterator[GhcrApi]:
    with GhcrApi(FakePackages(registry=prune_registry.address, token=TOKEN)) as api:
        yield api


def ghcr_prune(workdir: Path, image: str, api: GhcrApi, **inputs: str) -> Run:
    env = {"GITHUB_API_URL": api.url, "BUILDONCE_API_PACE_SECONDS": "0"}
    login = {"backend": "ghcr", "registry": image.split("/", 1)[0], "username": "octocat", "password": TOKEN}
    return run_prune(workdir, image, {**login, **inputs}, env=env)


def test_prune_deletes_package_versions_and_untags_through_the_api(
    prune_registry: RegistryServer, ghcr: GhcrApi, tmp_path: Path
) -> None:
    address = prune_registry.address
    repository = f"acme/{unique('widget')}"
    image = f"{address}/{repository}"
    old = build_pr(tmp_path / "old", image, 9, "9a" * 20, 3 * DAY, "linux/amd64,linux/arm64")
    both = build_pr(tmp_path / "both", image, 8, "8b" * 20, 3 * DAY)
    oci_push.retag(address, repository, both.outputs["digest"], "keep-me")
    build_push(tmp_path / "main", image, "main", "0c" * 20, 9 * DAY)
    ghcr.secondary_limit("DELETE")

    run = ghcr_prune(tmp_path / "run", image, ghcr, apply="true", **{"closed-prs": "8,9"})
    assert run.code == 0, run.log
    assert registry_api.digest_of(address, repository, old.outputs["digest"]) is None
    assert sorted(registry_api.tags(address, repository)) == ["keep-me", "latest", "sha-0c0c0c0"]
    assert registry_api.digest_of(address, repository, "keep-me") == both.outputs["digest"]
    assert run.outputs["untagged"] == f"{image}:pr-8-8b8b8b8"
    # The secondary limit was retried; the index's children went with it (cascade), their deletes a 404 = done.
    assert ghcr.count("DELETE", 403) == 1
    assert ghcr.count("DELETE", 404) >= 1
    assert ghcr.count("DELETE", 204) >= 2
    again = ghcr_prune(tmp_path / "again", image, ghcr, apply="true", **{"closed-prs": "8,9"})
    assert again.code == 0, again.log
    assert {entry["action"] for entry in planned(again).values()} == {"keep"}


def test_the_api_client_pages_and_classifies_github_answers(
    prune_registry: RegistryServer, ghcr: GhcrApi, tmp_path: Path
) -> None:
    address = prune_registry.address
    repository = f"acme/{unique('paged')}"
    image = parse_image_name(f"{address}/{repository}", source="test")
    for n in range(5):
        build_pr(tmp_path / str(n), str(image), 20 + n, f"{n}d" * 20, DAY)
    api = PackagesAPI(TOKEN, api_url=ghcr.url, pace_seconds=0, page_size=2)
    package = Package.of(image)
    versions = api.versions(package)
    assert len(versions) == 15  # five indexes, each of an image and its attestation
    assert ghcr.count("GET") == 8  # page by page, following Link
    assert sum(1 for version in versions if version.tags) == 5

    ghcr.secondary_limit("GET", retry_after="7")
    with pytest.raises(RegistryError) as limited:
        api.versions(package)
    assert limited.value.transient
    assert limited.value.retry_after == 7
    ghcr.primary_limit_spent("GET", reset_in=30)
    with pytest.raises(RegistryError) as spent:
        api.versions(package)
    assert spent.value.transient
    assert spent.value.retry_after is not None
    assert 20 < spent.value.retry_after <= 31

    assert api.delete_version(package, versions[0].id) is True
    assert api.delete_version(package, versions[0].id) is False  # 404: already gone

    refused = PackagesAPI("wrong-token", api_url=ghcr.url, pace_seconds=0)
    with pytest.raises(RegistryError) as bad:
        refused.versions(package)
    assert not bad.value.transient
    assert "401" in str(bad.value)
    assert "wrong-token" not in str(bad.value)


def test_a_user_package_is_found_under_users(prune_registry: RegistryServer, tmp_path: Path) -> None:
    address = prune_registry.address
    repository = f"octocat/{unique('mine')}"
    build_pr(tmp_path / "one", f"{address}/{repository}", 31, "3e" * 20, DAY)
    fake = FakePackages(registry=address, token=TOKEN, owner_kind="users")
    with GhcrApi(fake) as ghcr:
        api = PackagesAPI(TOKEN, api_url=ghcr.url, pace_seconds=0)
        versions = api.versions(Package("octocat", repository.split("/", 1)[1]))
        assert len(versions) == 3
        assert ghcr.count("GET", 404) == 1  # asked as an organization first


def test_pacing_spaces_the_deletes(prune_registry: RegistryServer, ghcr: GhcrApi, tmp_path: Path) -> None:
    address = prune_registry.address
    repository = f"acme/{unique('paced')}"
    build_pr(tmp_path / "one", f"{address}/{repository}", 41, "4f" * 20, DAY)
    waits: list[float] = []
    api = PackagesAPI(TOKEN, api_url=ghcr.url, pace_seconds=5, sleep=waits.append)
    package = Package.of(parse_image_name(f"{address}/{repository}", source="test"))
    first, second = api.versions(package)[:2]
    started = time.monotonic()
    api.delete_version(package, first.id)
    api.delete_version(package, second.id)
    assert len(waits) == 1
    assert 4 < waits[0] <= 5 + (time.monotonic() - started)
