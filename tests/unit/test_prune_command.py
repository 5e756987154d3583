"""The prune command's reading, sweeping and checking, against a registry in memory (``PruneRegistryAPI``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from buildonce.commands.prune import Reader, RepositoryResult, VersionDeleter, sweep, throwaway, verify
from buildonce.errors import RegistryError, VerificationError
from buildonce.github.packages import Package, PackageVersion
from buildonce.labels import CREATED, REVISION, rfc3339
from buildonce.oci import OCI_INDEX, OCI_MANIFEST, Manifest, sha256_digest
from buildonce.references import ImageName, parse_image_name
from buildonce.retention import Rules, plan_prune
from buildonce.retry import RetryPolicy

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
IMAGE = parse_image_name("registry.test/acme/widget", source="test")
RULES = Rules(now=NOW, default_branch="main", closed_prs=frozenset({7}))


@dataclass
class MemoryRegistry:
    tags: dict[str, str] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    unreadable: set[str] = field(default_factory=set)
    failing_deletes: int = 0
    vanishing: set[str] = field(default_factory=set)
    """Deleted by someone else just before prune's DELETE arrives."""

    def blob(self, data: bytes) -> str:
        self.blobs[sha256_digest(data)] = data
        return sha256_digest(data)

    def put(self, body: dict[str, Any], *tags: str) -> str:
        manifest = Manifest.from_bytes(json.dumps(body).encode(), body["mediaType"])
        self.manifests[manifest.digest] = manifest
        for tag in tags:
            self.tags[tag] = manifest.digest
        return manifest.digest

    def image(self, labels: dict[str, str], *tags: str) -> str:
        config = self.blob(json.dumps({"config": {"Labels": labels}}).encode())
        return self.put({"mediaType": OCI_MANIFEST, "config": {"digest": config, "size": 10}, "layers": []}, *tags)

    def list_tags(self, image: ImageName) -> list[str]:
        self.calls.append("list")
        return sorted(self.tags)

    def get_manifest(self, image: ImageName, reference: str) -> Manifest | None:
        self.calls.append(f"get {reference}")
        digest = self.tags.get(reference, reference)
        if digest in self.unreadable:
            raise RegistryError(f"{digest} answered HTTP 500", transient=True)
        return self.manifests.get(digest)

    def get_blob(self, image: ImageName, digest: str) -> bytes:
        return self.blobs[digest]

    def referrers(self, image: ImageName, digest: str) -> list[dict[str, Any]] | None:
        return None

    def resolve(self, image: ImageName, reference: str) -> str | None:
        digest = self.tags.get(reference, reference)
        return digest if digest in self.manifests else None

    def put_manifest(self, image: ImageName, tag: str, manifest: Manifest) -> str:
        self.calls.append(f"put {tag}")
        self.manifests[manifest.digest] = manifest
        self.tags[tag] = manifest.digest
        return manifest.digest

    def delete_manifest(self, image: ImageName, reference: str) -> bool:
        self.calls.append(f"delete {reference}")
        if self.failing_deletes:
            self.failing_deletes -= 1
            raise RegistryError("HTTP 503", transient=True)
        if reference in self.vanishing:
            self.manifests.pop(reference, None)
        if reference not in self.manifests:
            return False
        del self.manifests[reference]
        self.tags = {tag: digest for tag, digest in self.tags.items() if digest != reference}
        return True

    def close(self) -> None:
        pass


def pr_labels(number: int, sha: str, age: timedelta) -> dict[str, str]:
    return {
        REVISION: sha,
        "dev.buildonce.pr.number": str(number),
        "dev.buildonce.pr.head-sha": sha,
        CREATED: rfc3339(NOW - age),
    }


def policy() -> RetryPolicy:
    return RetryPolicy(attempts=3, wait_seconds=0, sleep=lambda _: None)


def scene() -> tuple[MemoryRegistry, str, list[str], str]:
    """A closed pull request's index of two images, one of which a kept index shares, and a second tag."""
    registry = MemoryRegistry()
    own = registry.image(pr_labels(7, "a" * 40, timedelta(days=2)))
    shared = registry.image({REVISION: "b" * 40})
    registry.put({"mediaType": OCI_INDEX, "manifests": [{"digest": shared}]}, "latest")
    index = registry.put({"mediaType": OCI_INDEX, "manifests": [{"digest": own}, {"digest": shared}]}, "pr-7-aaaaaaa")
    kept_twice = registry.image(pr_labels(7, "c" * 40, timedelta(days=2)), "pr-7-ccccccc", "keep-me")
    return registry, index, [own, shared], kept_twice


def run_all(registry: MemoryRegistry, budget: int = 100) -> RepositoryResult:
    snapshot = Reader(registry, policy(), IMAGE, RULES).read()
    result = RepositoryResult(IMAGE, plan_prune(snapshot, RULES))
    sweep(registry, policy(), result, budget, now=lambda: NOW, delete=lambda d: registry.delete_manifest(IMAGE, d))
    verify(registry, policy(), result, snapshot)
    return result


def test_the_sweep_deletes_top_first_keeps_the_shared_child_and_untags_through_a_marker() -> None:
    registry, index, (own, shared), kept_twice = scene()
    result = run_all(registry)
    deletes = [call.removeprefix("delete ") for call in registry.calls if call.startswith("delete ")]
    assert deletes[:2] == [index, own]
    assert shared in registry.manifests
    assert kept_twice in registry.manifests
    assert sorted(registry.tags) == ["keep-me", "latest"]
    assert result.untagged == ["pr-7-ccccccc"]
    # The untag put a throwaway at the tag, then deleted the throwaway by its digest.
    marker = throwaway("pr-7-ccccccc", NOW)
    assert "put pr-7-ccccccc" in registry.calls
    assert deletes[2] == marker.digest
    assert result.verified


def test_transient_delete_failures_are_retried_and_404_counts_as_done() -> None:
    registry, index, (own, _), _ = scene()
    registry.failing_deletes = 2
    registry.vanishing.add(own)
    result = run_all(registry)
    assert result.deleted[:2] == [index, own]
    assert registry.calls.count(f"delete {index}") == 3
    assert own not in registry.manifests


def test_the_budget_stops_between_images() -> None:
    registry, index, (own, _), _ = scene()
    snapshot = Reader(registry, policy(), IMAGE, RULES).read()
    result = RepositoryResult(IMAGE, plan_prune(snapshot, RULES))
    left = sweep(registry, policy(), result, 1, now=lambda: NOW, delete=lambda d: registry.delete_manifest(IMAGE, d))
    # The first group (the index and its own child) is started as nothing else was done, and finished whole.
    assert result.deleted == [index, own]
    assert result.remaining == 1
    assert left == -1


def test_an_unreadable_manifest_stops_the_reading() -> None:
    registry, _, (own, _), _ = scene()
    registry.unreadable.add(own)
    with pytest.raises(RegistryError, match="still failing after 3 attempts"):
        Reader(registry, policy(), IMAGE, RULES).read()


def test_verification_fails_when_a_kept_child_is_gone() -> None:
    registry, _, (_, shared), _ = scene()
    snapshot = Reader(registry, policy(), IMAGE, RULES).read()
    result = RepositoryResult(IMAGE, plan_prune(snapshot, RULES))
    del registry.manifests[shared]
    with pytest.raises(VerificationError, match=shared):
        verify(registry, policy(), result, snapshot)


@dataclass
class MemoryPackages:
    versions: list[PackageVersion]
    deleted: list[int] = field(default_factory=list)
    listings: int = 0

    def versions_of(self) -> list[PackageVersion]:
        return [version for version in self.versions if version.id not in self.deleted]


class FakeApi:
    def __init__(self, packages: MemoryPackages) -> None:
        self.packages = packages

    def versions(self, package: Package) -> list[PackageVersion]:
        self.packages.listings += 1
        return self.packages.versions_of()

    def delete_version(self, package: Package, version: int) -> bool:
        if version in self.packages.deleted:
            return False
        self.packages.deleted.append(version)
        return True


def test_ghcr_deletes_versions_by_digest_and_lists_again_for_a_new_one() -> None:
    packages = MemoryPackages([PackageVersion(1, "sha256:" + "1" * 64, ("pr-1-aaaaaaa",), "")])
    deleter = VersionDeleter(FakeApi(packages), IMAGE)  # type: ignore[arg-type]
    assert deleter.delete("sha256:" + "1" * 64) is True
    assert packages.deleted == [1]
    packages.versions.append(PackageVersion(2, "sha256:" + "2" * 64, ("marker",), ""))
    assert deleter.delete("sha256:" + "2" * 64) is True
    assert packages.listings == 2
    assert deleter.delete("sha256:" + "3" * 64) is False  # no such version: gone, which is done


def test_a_ghcr_package_needs_an_owner() -> None:
    assert Package.of(parse_image_name("ghcr.io/acme/tools/widget", source="test")) == Package("acme", "tools/widget")
    assert Package("acme", "tools/widget").path("orgs") == "/orgs/acme/packages/container/tools%2Fwidget/versions"
    with pytest.raises(RegistryError, match="names no owner"):
        Package.of(parse_image_name("ghcr.io/widget", source="test"))
