from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from buildonce.artifact import (
    MAX_JSON_MEMBER,
    checksum_path,
    pushed_manifests,
    read_image_tar,
    scan_image_tar,
    verify,
    write_artifact,
)
from buildonce.compression import Compression
from buildonce.errors import ArtifactError
from buildonce.oci import Manifest
from buildonce.tarimage import PROOF_DIRECTORY


def tar_bytes(size: int = 300_000) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = os.urandom(size)
        info = tarfile.TarInfo("blob")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize(
    ("compression", "suffix"),
    [(Compression.NONE, ".tar"), (Compression.GZIP, ".tar.gz"), (Compression.ZSTD, ".tar.zst")],
)
def test_round_trip(tmp_path: Path, compression: Compression, suffix: str) -> None:
    data = tar_bytes()
    artifact = write_artifact(chunks(data), tmp_path, "app-pr-1-abc1234", compression)
    assert artifact.path.name == f"app-pr-1-abc1234{suffix}"
    assert artifact.sha256 == hashlib.sha256(artifact.path.read_bytes()).hexdigest()
    assert checksum_path(artifact.path).read_text() == f"{artifact.sha256}  {artifact.path.name}\n"
    assert artifact.size == artifact.path.stat().st_size
    assert verify(artifact.path) == artifact.sha256
    assert b"".join(read_image_tar(artifact.path)) == data
    if compression is Compression.GZIP:
        assert gzip.decompress(artifact.path.read_bytes()) == data
    if compression is Compression.ZSTD:
        assert zstandard.ZstdDecompressor().decompressobj().decompress(artifact.path.read_bytes()) == data
    assert not list(tmp_path.glob("*.partial"))


def test_a_failed_stream_leaves_no_artifact(tmp_path: Path) -> None:
    def broken() -> Iterator[bytes]:
        yield b"x" * 10
        raise RuntimeError("engine went away")

    with pytest.raises(RuntimeError):
        write_artifact(broken(), tmp_path, "app", Compression.NONE)
    assert list(tmp_path.iterdir()) == []


def test_checksum_mismatch_and_missing(tmp_path: Path) -> None:
    artifact = write_artifact(chunks(tar_bytes()), tmp_path, "app", Compression.NONE)
    checksum_path(artifact.path).write_text("0" * 64 + "  app.tar\n")
    with pytest.raises(ArtifactError, match="corrupted"):
        verify(artifact.path)
    checksum_path(artifact.path).unlink()
    with pytest.raises(ArtifactError, match="no checksum"):
        verify(artifact.path)
    with pytest.raises(ArtifactError, match="does not exist"):
        verify(tmp_path / "missing.tar")


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
def test_truncated_compressed_stream_is_an_error(tmp_path: Path, compression: Compression) -> None:
    artifact = write_artifact(chunks(tar_bytes()), tmp_path, "app", compression)
    artifact.path.write_bytes(artifact.path.read_bytes()[: artifact.size // 2])
    with pytest.raises(ArtifactError):
        b"".join(read_image_tar(artifact.path))


def image_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("compression", list(Compression))
def test_scan_reads_the_json_files_and_the_manifests_put_in_front(tmp_path: Path, compression: Compression) -> None:
    layer = os.urandom(MAX_JSON_MEMBER + 1)
    files = {
        "blobs/sha256/" + "a" * 64: b'{"config": 1}',
        "./manifest.json": b'[{"Config": "x"}]',
        "blobs/sha256/" + "b" * 64: layer,
        "blobs/sha256/" + "c" * 64: b"not json, a small layer",
    }
    pushed = [b'{"schemaVersion": 2}', b'{"schemaVersion": 2, "child": true}']
    artifact = write_artifact(chunks(image_tar(files)), tmp_path, "app", compression, manifests=pushed)
    contents = scan_image_tar(artifact.path)
    assert set(contents.files) == {
        "blobs/sha256/" + "a" * 64,
        "manifest.json",
        *(f"{PROOF_DIRECTORY}/{hashlib.sha256(raw).hexdigest()}" for raw in pushed),
    }
    assert contents.blob("sha256:" + hashlib.sha256(pushed[1]).hexdigest()) == pushed[1]
    # The members in front do not hide docker's: every one is still in the stream, in order.
    with tarfile.open(fileobj=io.BytesIO(b"".join(read_image_tar(artifact.path))), mode="r:") as archive:
        names = archive.getnames()
    assert names[2:] == list(files)
    assert verify(artifact.path) == artifact.sha256


def test_scan_bounds_what_it_keeps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("buildonce.artifact.MAX_JSON_TOTAL", 100)
    files = {f"blobs/sha256/{n}": b"{" + b" " * 60 + b"}" for n in range(3)}
    artifact = write_artifact(chunks(image_tar(files)), tmp_path, "app", Compression.NONE)
    with pytest.raises(ArtifactError, match="more than"):
        scan_image_tar(artifact.path)


def test_scan_of_something_that_is_not_a_tar_is_an_error(tmp_path: Path) -> None:
    artifact = write_artifact(chunks(os.urandom(5000)), tmp_path, "app", Compression.GZIP)
    with pytest.raises(ArtifactError, match="not a readable tar"):
        scan_image_tar(artifact.path)


def test_pushed_manifests_takes_an_index_and_its_images_but_no_attestation() -> None:
    child = b'{"schemaVersion":2,"config":{"digest":"sha256:' + b"1" * 64 + b'"},"layers":[]}'
    attestation_digest = "sha256:" + "2" * 64
    child_digest = "sha256:" + hashlib.sha256(child).hexdigest()
    top = json.dumps(
        {
            "manifests": [
                {"digest": child_digest, "platform": {"os": "linux", "architecture": "amd64"}},
                {
                    "digest": attestation_digest,
                    "platform": {"os": "unknown", "architecture": "unknown"},
                    "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
                },
            ]
        }
    ).encode()
    served = {"t": top, child_digest: child}
    asked: list[str] = []

    def fetch(reference: str) -> Manifest | None:
        asked.append(reference)
        raw = served.get(reference)
        return Manifest.from_bytes(raw) if raw else None

    assert pushed_manifests(fetch, "t") == [top, child]
    assert asked == ["t", child_digest]
    assert pushed_manifests(fetch, "gone") == []
