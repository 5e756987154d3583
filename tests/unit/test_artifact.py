from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from buildonce.artifact import checksum_path, read_image_tar, verify, write_artifact
from buildonce.errors import ArtifactError
from buildonce.options import Compression


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
