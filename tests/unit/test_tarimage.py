"""What an image tar holds and proves, from its own files: both ``docker save`` layouts, the build's proof
members, and tars that lie about themselves."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from buildonce.errors import ArtifactError
from buildonce.references import ImageName
from buildonce.tarimage import (
    CONTAINERD_NAME,
    PROOF_DIRECTORY,
    HeldImage,
    TarContents,
    describe_held,
    held_images,
    loaded_matches,
    member_path,
    pick,
    proven_digests,
    why_not_pinned,
)

IMAGE = ImageName("127.0.0.1:5000/app")
AMD64 = "linux/amd64"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def blob_path(raw: bytes) -> str:
    return "blobs/sha256/" + hashlib.sha256(raw).hexdigest()


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def config(revision: str, arch: str = "amd64") -> bytes:
    return dumps(
        {
            "architecture": arch,
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": {"Labels": {"org.opencontainers.image.revision": revision}, "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + revision[:1] * 64]},
        }
    )


def manifest(config_raw: bytes, layer: str = "a") -> bytes:
    return dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config_raw)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + layer * 64}],
        }
    )


def index(*children: tuple[bytes, str]) -> bytes:
    entries = []
    for raw, platform in children:
        os_name, arch = platform.split("/")
        entry: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": digest(raw), "size": len(raw)}
        entry["platform"] = {"os": os_name, "architecture": arch}
        if platform == "unknown/unknown":
            entry["annotations"] = {"vnd.docker.reference.type": "attestation-manifest"}
        entries.append(entry)
    return dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})


def classic_tar(config_raw: bytes, *names: str, extra: dict[str, bytes] | None = None) -> TarContents:
    """What the classic store's docker save holds: the config and manifest.json (its OCI index names a
    manifest of uncompressed layers that no registry serves, left out here)."""
    files = {
        blob_path(config_raw): config_raw,
        "manifest.json": dumps([{"Config": blob_path(config_raw), "RepoTags": list(names), "Layers": []}]),
    }
    return TarContents({**files, **(extra or {})})


def proof(*manifests: bytes) -> dict[str, bytes]:
    return {f"{PROOF_DIRECTORY}/{hashlib.sha256(raw).hexdigest()}": raw for raw in manifests}


def containerd_tar(top: bytes, name: str, *blobs: bytes, config_raw: bytes) -> TarContents:
    """What the containerd store's docker save holds: an OCI layout whose index names the image's own
    descriptor, every blob, and a manifest.json beside it."""
    files = {blob_path(raw): raw for raw in (top, *blobs, config_raw)}
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    files["index.json"] = dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": OCI_INDEX,
                    "digest": digest(top),
                    "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "t"},
                }
            ],
        }
    )
    files["manifest.json"] = dumps([{"Config": blob_path(config_raw), "RepoTags": [name], "Layers": []}])
    return TarContents(files)


def only(held: list[HeldImage]) -> HeldImage:
    assert len(held) == 1
    return held[0]


def test_classic_tar_is_known_by_its_config_digest() -> None:
    cfg = config("1" * 40)
    held = only(held_images(classic_tar(cfg, f"{IMAGE}:pr-1-1111111"), IMAGE, containerd=False, platform=AMD64))
    assert (held.tag, held.config_digest, held.loaded_id) == ("pr-1-1111111", digest(cfg), digest(cfg))
    assert held.labels == {"org.opencontainers.image.revision": "1" * 40}


def test_the_containerd_store_loads_a_classic_tar_under_an_id_of_its_own() -> None:
    cfg = config("1" * 40)
    held = only(held_images(classic_tar(cfg, f"{IMAGE}:t"), IMAGE, containerd=True, platform=AMD64))
    assert held.config_digest == digest(cfg)
    assert held.loaded_id == ""
    assert held.identity == digest(cfg)


def test_containerd_tar_is_known_by_its_index_and_its_platform_image() -> None:
    amd, arm = config("1" * 40), config("2" * 40, "arm64")
    amd_manifest, arm_manifest = manifest(amd, "a"), manifest(arm, "b")
    attestation = manifest(dumps({"predicate": 1}), "c")
    top = index((amd_manifest, AMD64), (arm_manifest, "linux/arm64"), (attestation, "unknown/unknown"))
    contents = containerd_tar(top, f"{IMAGE}:t", amd_manifest, arm_manifest, attestation, config_raw=amd)
    contents = TarContents({**contents.files, blob_path(arm): arm})
    held = only(held_images(contents, IMAGE, containerd=True, platform=AMD64))
    assert (held.loaded_id, held.config_digest) == (digest(top), digest(amd))
    on_arm = only(held_images(contents, IMAGE, containerd=True, platform="linux/arm64"))
    assert on_arm.config_digest == digest(arm)
    assert on_arm.labels["org.opencontainers.image.revision"] == "2" * 40
    # The classic store loads the same tar from manifest.json.
    assert only(held_images(contents, IMAGE, containerd=False, platform=AMD64)).loaded_id == digest(amd)
    # The tar proves its own index, and the index is what a pin of it names.
    assert why_not_pinned(contents, held, digest(top), AMD64) == ""
    assert digest(top) in proven_digests(contents, held, AMD64)
    assert why_not_pinned(contents, on_arm, digest(top), "linux/arm64") == ""


def test_an_index_without_the_engines_platform_is_refused() -> None:
    arm = config("2" * 40, "arm64")
    arm_manifest = manifest(arm)
    top = index((arm_manifest, "linux/arm64"))
    contents = containerd_tar(top, f"{IMAGE}:t", arm_manifest, config_raw=arm)
    with pytest.raises(ArtifactError, match="no linux/amd64 image"):
        held_images(contents, IMAGE, containerd=True, platform=AMD64)


def test_the_pushed_manifest_in_the_tar_proves_the_classic_stores_image() -> None:
    cfg = config("1" * 40)
    pushed = manifest(cfg)
    contents = classic_tar(cfg, f"{IMAGE}:t", extra=proof(pushed))
    held = only(held_images(contents, IMAGE, containerd=False, platform=AMD64))
    assert why_not_pinned(contents, held, digest(pushed), AMD64) == ""
    assert proven_digests(contents, held, AMD64) == [digest(pushed)]
    assert describe_held(contents, held, AMD64) == f"{IMAGE}:t ({digest(cfg)}, pushed as {digest(pushed)})"


def test_a_pin_the_tar_carries_no_manifest_for_is_not_proven() -> None:
    cfg = config("1" * 40)
    contents = classic_tar(cfg, f"{IMAGE}:t", extra=proof(manifest(cfg)))
    held = only(held_images(contents, IMAGE, containerd=False, platform=AMD64))
    pin = "sha256:" + "9" * 64
    assert why_not_pinned(contents, held, pin, AMD64) == f"the tar carries no manifest that hashes to {pin}"
    # Nor is the config digest (the classic store's image id) a manifest.
    assert why_not_pinned(contents, held, digest(cfg), AMD64)


def test_another_builds_manifest_does_not_prove_this_image() -> None:
    ours, theirs = config("1" * 40), config("2" * 40)
    theirs_manifest = manifest(theirs)
    # A tar that carries the pinned manifest's bytes, but holds another image.
    contents = classic_tar(ours, f"{IMAGE}:t", extra=proof(theirs_manifest))
    held = only(held_images(contents, IMAGE, containerd=False, platform=AMD64))
    reason = why_not_pinned(contents, held, digest(theirs_manifest), AMD64)
    assert digest(theirs) in reason
    assert digest(ours) in reason
    assert proven_digests(contents, held, AMD64) == []


def test_a_pinned_index_is_proven_by_its_image_for_the_engines_platform() -> None:
    amd, arm = config("1" * 40), config("2" * 40, "arm64")
    amd_manifest, arm_manifest = manifest(amd, "a"), manifest(arm, "b")
    top = index((amd_manifest, AMD64), (arm_manifest, "linux/arm64"))
    contents = classic_tar(amd, f"{IMAGE}:t", extra=proof(top, amd_manifest, arm_manifest))
    held = only(held_images(contents, IMAGE, containerd=False, platform=AMD64))
    assert why_not_pinned(contents, held, digest(top), AMD64) == ""
    # On an arm64 engine the pin means the arm64 image, which this tar does not hold.
    assert digest(arm) in why_not_pinned(contents, held, digest(top), "linux/arm64")
    # Without the child's bytes the index proves nothing.
    bare = classic_tar(amd, f"{IMAGE}:t", extra=proof(top))
    assert "does not carry" in why_not_pinned(bare, held, digest(top), AMD64)


def test_a_config_whose_bytes_were_changed_is_known_by_what_it_hashes_to() -> None:
    cfg = config("1" * 40)
    pushed = manifest(cfg)
    tampered = cfg.replace(b"1111", b"2222", 1)
    # The file keeps its name, but its content is another config: the name proves nothing.
    contents = TarContents(
        {
            blob_path(cfg): tampered,
            "manifest.json": dumps([{"Config": blob_path(cfg), "RepoTags": [f"{IMAGE}:t"], "Layers": []}]),
            **proof(pushed),
        }
    )
    held = only(held_images(contents, IMAGE, containerd=False, platform=AMD64))
    assert held.config_digest == digest(tampered)
    assert why_not_pinned(contents, held, digest(pushed), AMD64)


def test_only_the_repositorys_tagged_images_are_held_in_the_planned_order() -> None:
    a, b, other = config("1" * 40), config("2" * 40), config("3" * 40)
    entries = [
        {"Config": blob_path(a), "RepoTags": [f"{IMAGE}:a", "127.0.0.1:5000/other:b"]},
        {"Config": blob_path(other), "RepoTags": ["127.0.0.1:5000/other:x"]},
        {"Config": blob_path(b), "RepoTags": [f"{IMAGE}:b"]},
        {"Config": blob_path(b), "RepoTags": None},
    ]
    files = {blob_path(raw): raw for raw in (a, b, other)}
    contents = TarContents({**files, "manifest.json": dumps(entries)})
    held = held_images(contents, IMAGE, containerd=False, platform=AMD64)
    assert [image.tag for image in held] == ["a", "b"]
    assert [image.tag for image in pick(held, ["b"])] == ["b", "a"]
    assert [image.tag for image in pick(held, ["zzz"])] == ["a", "b"]


def test_docker_hub_names_match_however_they_are_spelled() -> None:
    cfg = config("1" * 40)
    contents = classic_tar(cfg, "acme/app:t")
    assert only(held_images(contents, ImageName("docker.io/acme/app"), containerd=False, platform=AMD64)).tag == "t"
    contents = classic_tar(cfg, "index.docker.io/library/nginx:t")
    assert only(held_images(contents, ImageName("nginx"), containerd=False, platform=AMD64)).tag == "t"


@pytest.mark.parametrize(
    "files",
    [
        {"manifest.json": b"[" * 100_000 + b"]" * 100_000},
        {"manifest.json": b'{"not": "a list"}'},
        {"manifest.json": b'[{"Config": 5, "RepoTags": ["127.0.0.1:5000/app:t"]}]'},
        {"manifest.json": b'[{"Config": "missing.json", "RepoTags": ["127.0.0.1:5000/app:t"]}]'},
        {"manifest.json": b"[1]"},
        {"index.json": b'{"manifests": 3}', "oci-layout": b"{}"},
        {"index.json": dumps({"manifests": [{"digest": 1, "annotations": {CONTAINERD_NAME: f"{IMAGE}:t"}}]})},
    ],
)
def test_a_tar_that_lies_about_itself_is_one_clear_error(files: dict[str, bytes]) -> None:
    with pytest.raises(ArtifactError):
        held_images(TarContents(files), IMAGE, containerd=True, platform=AMD64)


def test_loaded_image_is_checked_by_id_or_else_by_the_engines_view_of_the_config() -> None:
    cfg = config("1" * 40)
    classic = only(held_images(classic_tar(cfg, f"{IMAGE}:t"), IMAGE, containerd=False, platform=AMD64))
    assert loaded_matches(classic, digest(cfg), {})
    assert not loaded_matches(classic, "sha256:" + "0" * 64, {})
    unknown = only(held_images(classic_tar(cfg, f"{IMAGE}:t"), IMAGE, containerd=True, platform=AMD64))
    facts = {
        "os": "linux",
        "architecture": "amd64",
        "created": "2026-01-01T00:00:00Z",
        "diff_ids": ["sha256:" + "1" * 64],
        "labels": {"org.opencontainers.image.revision": "1" * 40},
        "env": ["PATH=/bin"],
        "cmd": [],
        "entrypoint": [],
    }
    assert loaded_matches(unknown, "sha256:" + "e" * 64, facts)
    assert not loaded_matches(unknown, "sha256:" + "e" * 64, {**facts, "labels": {}})
    assert not loaded_matches(unknown, "sha256:" + "e" * 64, {**facts, "diff_ids": ["sha256:" + "2" * 64]})


def test_member_paths_are_normalised() -> None:
    assert member_path("./blobs//sha256/x") == "blobs/sha256/x"
    assert member_path("/../manifest.json") == "manifest.json"
