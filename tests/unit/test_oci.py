"""The OCI values: one platform rule, and the index a merge of per-platform builds puts under its tags."""

from __future__ import annotations

import json

from buildonce.oci import OCI_INDEX, OCI_MANIFEST, Manifest, build_index, select_manifest
from buildonce.platforms import matches


def test_arm64_without_variant_is_v8_and_no_other_variant() -> None:
    assert matches("linux/arm64/v8", "linux", "arm64", None)
    assert matches("linux/arm64", "linux", "arm64", "v8")
    assert not matches("linux/arm64/v9", "linux", "arm64", None)
    assert not matches("linux/arm/v7", "linux", "arm", None)
    assert not matches("linux/amd64", "windows", "amd64", None)


def test_build_index_lists_each_manifest_with_its_platform() -> None:
    amd = Manifest.from_bytes(json.dumps({"mediaType": OCI_MANIFEST, "layers": ["a"]}).encode())
    arm = Manifest.from_bytes(json.dumps({"mediaType": OCI_MANIFEST, "layers": ["b"]}).encode())
    index = build_index([(amd, "linux/amd64"), (arm, "linux/arm/v7")], {"org.opencontainers.image.revision": "abc"})
    assert index.is_index
    assert index.media_type == OCI_INDEX
    body = index.json()
    assert [entry["digest"] for entry in body["manifests"]] == [amd.digest, arm.digest]
    assert body["manifests"][0]["size"] == len(amd.raw)
    assert body["manifests"][1]["platform"] == {"os": "linux", "architecture": "arm", "variant": "v7"}
    assert body["annotations"] == {"org.opencontainers.image.revision": "abc"}
    assert (select_manifest(body, "linux/arm/v7") or {})["digest"] == arm.digest
    assert Manifest.from_bytes(index.raw).digest == index.digest
