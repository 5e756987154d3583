"""Promotion's rewriting of an image, against a registry in memory: what changes, and what stays byte for byte."""

from __future__ import annotations

import json
from typing import Any

import pytest

from buildonce.commands.promote import Found, lookup, promote_image, record_key
from buildonce.errors import RegistryError, VerificationError
from buildonce.labels import REVISION, Keys
from buildonce.oci import OCI_INDEX, OCI_MANIFEST, Manifest, sha256_digest
from buildonce.references import ImageName, parse_image_name
from buildonce.retry import RetryPolicy

KEYS = Keys()
IMAGE = parse_image_name("registry.test/acme/widget", source="images")
KEY = "3" * 64
TESTED = "5" * 40
LAYERS = [
    {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "a" * 64, "size": 10},
    {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "b" * 64, "size": 20},
]


class MemoryRegistry:
    def __init__(self) -> None:
        self.manifests: dict[str, Manifest] = {}
        self.tags: dict[str, str] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.failures = 0

    def resolve(self, image: ImageName, reference: str) -> str | None:
        self.requests.append(f"HEAD {reference}")
        if self.failures:
            self.failures -= 1
            raise RegistryError("503", transient=True)
        return reference if reference in self.manifests else self.tags.get(reference)

    def get_manifest(self, image: ImageName, reference: str) -> Manifest | None:
        self.requests.append(f"GET {reference}")
        digest = self.tags.get(reference, reference)
        return self.manifests.get(digest)

    def put_manifest(self, image: ImageName, tag: str, manifest: Manifest) -> str:
        self.requests.append(f"PUT {tag}")
        self.manifests[manifest.digest] = manifest
        if tag != manifest.digest:
            self.tags[tag] = manifest.digest
        return manifest.digest

    def get_blob(self, image: ImageName, digest: str) -> bytes:
        self.requests.append(f"GET blob {digest}")
        return self.blobs[digest]

    def push_blob(self, image: ImageName, data: bytes) -> str:
        self.requests.append("PUT blob")
        self.blobs[sha256_digest(data)] = data
        return sha256_digest(data)

    def store(self, body: dict[str, Any], media_type: str) -> Manifest:
        manifest = Manifest.from_bytes(json.dumps(body).encode(), media_type)
        self.manifests[manifest.digest] = manifest
        return manifest


def labels_of_tested() -> dict[str, str]:
    return {
        "org.opencontainers.image.title": "widget",
        REVISION: TESTED,
        KEYS.pr_number: "123",
        KEYS.pr_head_sha: "a" * 40,
        KEYS.build_key: KEY,
    }


def platform_image(registry: MemoryRegistry, architecture: str) -> Manifest:
    config = {
        "architecture": architecture,
        "os": "linux",
        "config": {"Cmd": ["cat", "/hello"], "Labels": labels_of_tested()},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "c" * 64, "sha256:" + "d" * 64]},
        "history": [{"created_by": "COPY hello && true"}],
    }
    raw = json.dumps(config).encode()
    registry.blobs[sha256_digest(raw)] = raw
    return registry.store(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256_digest(raw),
                "size": len(raw),
            },
            "layers": LAYERS,
            "annotations": {REVISION: TESTED, "com.example.team": "infra"},
        },
        OCI_MANIFEST,
    )


PLANNED = {
    "org.opencontainers.image.title": "widget",
    REVISION: "0" * 40,
    KEYS.branch: "main",
    KEYS.build_key: KEY,
}
POLICY = RetryPolicy(attempts=3, wait_seconds=0, sleep=lambda _: None)


def config_of(registry: MemoryRegistry, manifest: Manifest) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(registry.blobs[manifest.json()["config"]["digest"]])
    return data


def test_a_single_image_gets_a_new_config_around_the_very_same_layers() -> None:
    registry = MemoryRegistry()
    tested = platform_image(registry, "amd64")
    found = Found(IMAGE, tested.digest, labels_of_tested())
    promoted = promote_image(registry, POLICY, found, PLANNED, KEYS)
    assert promoted.digest != tested.digest
    new = registry.manifests[promoted.digest]
    assert new.json()["layers"] == LAYERS
    assert new.json()["annotations"] == {REVISION: "0" * 40, "com.example.team": "infra"}
    before, after = config_of(registry, tested), config_of(registry, new)
    assert after["config"]["Labels"] == {
        "org.opencontainers.image.title": "widget",
        REVISION: "0" * 40,
        KEYS.build_key: KEY,
        KEYS.branch: "main",
        KEYS.promoted_from: tested.digest,
    }
    # Nothing but the labels differs: the same layers, history, command and platform.
    del before["config"]["Labels"], after["config"]["Labels"]
    assert before == after
    assert promoted.uploaded == len(registry.blobs[new.json()["config"]["digest"]]) + len(new.raw)
    assert not registry.tags  # no tag yet: publishing does that


def test_the_same_promotion_twice_makes_the_same_digest() -> None:
    registry = MemoryRegistry()
    tested = platform_image(registry, "amd64")
    found = Found(IMAGE, tested.digest, labels_of_tested())
    assert promote_image(registry, POLICY, found, PLANNED, KEYS).digest == (
        promote_image(registry, POLICY, found, PLANNED, KEYS).digest
    )


def test_an_index_is_promoted_per_platform_without_the_tested_attestations() -> None:
    registry = MemoryRegistry()
    amd, arm = platform_image(registry, "amd64"), platform_image(registry, "arm64")
    attestation = registry.store({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}, OCI_MANIFEST)
    index = registry.store(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": amd.digest,
                    "size": len(amd.raw),
                    "platform": {"os": "linux", "architecture": "amd64"},
                },
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": arm.digest,
                    "size": len(arm.raw),
                    "platform": {"os": "linux", "architecture": "arm64"},
                },
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": attestation.digest,
                    "size": len(attestation.raw),
                    "platform": {"os": "unknown", "architecture": "unknown"},
                    "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
                },
            ],
            "annotations": {REVISION: TESTED},
        },
        OCI_INDEX,
    )
    promoted = promote_image(registry, POLICY, Found(IMAGE, index.digest, labels_of_tested()), PLANNED, KEYS)
    assert promoted.dropped == 1
    body = registry.manifests[promoted.digest].json()
    assert body["annotations"] == {REVISION: "0" * 40}
    assert [entry["platform"]["architecture"] for entry in body["manifests"]] == ["amd64", "arm64"]
    for entry, tested in zip(body["manifests"], (amd, arm), strict=True):
        child = registry.manifests[entry["digest"]]
        assert entry["digest"] != tested.digest
        assert entry["size"] == len(child.raw)
        assert child.json()["layers"] == tested.json()["layers"]
        assert config_of(registry, child)["architecture"] == config_of(registry, tested)["architecture"]
        assert config_of(registry, child)["config"]["Labels"][REVISION] == "0" * 40


def test_the_lookup_takes_only_an_image_whose_label_carries_the_key() -> None:
    registry = MemoryRegistry()
    tested = platform_image(registry, "amd64")
    registry.tags[f"buildkey-{KEY}"] = tested.digest
    found = lookup(registry, POLICY, (IMAGE,), KEY, KEYS)
    assert found == Found(IMAGE, tested.digest, labels_of_tested())
    assert len(registry.requests) == 3  # the tag, the manifest, the config
    other = "4" * 64
    registry.tags[f"buildkey-{other}"] = tested.digest  # a lookup tag pointed at an image of another key
    assert lookup(registry, POLICY, (IMAGE,), other, KEYS) is None
    assert lookup(registry, POLICY, (IMAGE,), "5" * 64, KEYS) is None


def test_a_transient_fault_in_the_lookup_is_retried() -> None:
    registry = MemoryRegistry()
    tested = platform_image(registry, "amd64")
    registry.tags[f"buildkey-{KEY}"] = tested.digest
    registry.failures = 1
    assert lookup(registry, POLICY, (IMAGE,), KEY, KEYS) is not None


def test_the_lookup_tag_is_set_once_and_never_moved() -> None:
    registry = MemoryRegistry()
    first, second = platform_image(registry, "amd64"), platform_image(registry, "arm64")
    record_key(registry, POLICY, (IMAGE,), first.digest, KEY)
    assert registry.tags[f"buildkey-{KEY}"] == first.digest
    record_key(registry, POLICY, (IMAGE,), second.digest, KEY)
    assert registry.tags[f"buildkey-{KEY}"] == first.digest


@pytest.mark.parametrize("missing", ["manifest", "child"])
def test_a_tested_image_that_cannot_be_read_is_not_promoted(missing: str) -> None:
    registry = MemoryRegistry()
    digest = "sha256:" + "f" * 64
    if missing == "child":
        entry = {
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": 1,
            "platform": {"os": "linux", "architecture": "amd64"},
        }
        digest = registry.store({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}, OCI_INDEX).digest
    with pytest.raises(VerificationError, match="missing"):
        promote_image(registry, POLICY, Found(IMAGE, digest, labels_of_tested()), PLANNED, KEYS)
    assert not registry.tags
