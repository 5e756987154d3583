"""The image tar artifact: the fallback a downstream job loads when the registry cannot serve the image.

Saving streams ``docker save`` through an optional compressor to disk in fixed-size chunks, hashing as it
goes, so memory stays flat whatever the image size. A ``.sha256`` file in ``sha256sum`` format sits beside
the tar. Loading checks that checksum first and decompresses on the fly.
"""

from __future__ import annotations

import hashlib
import itertools
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import zstandard

from buildonce.errors import ArtifactError
from buildonce.options import Compression

CHUNK_SIZE = 1 << 20
SUFFIXES = {Compression.NONE: ".tar", Compression.GZIP: ".tar.gz", Compression.ZSTD: ".tar.zst"}
GZIP_LEVEL = 1
"""Fast rather than small: the artifact lives a day and upload-artifact zips it again."""
ZSTD_LEVEL = 3

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _Decompressor(Protocol):
    """What zlib's and zstandard's streaming decompressors have in common."""

    @property
    def eof(self) -> bool: ...

    def decompress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


@dataclass(frozen=True)
class Artifact:
    path: Path
    name: str
    sha256: str
    size: int

    @property
    def checksum_path(self) -> Path:
        return checksum_path(self.path)


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _compressor(compression: Compression) -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
    if compression is Compression.GZIP:
        gzip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        return gzip.compress, gzip.flush
    if compression is Compression.ZSTD:
        zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        return zstd.compress, zstd.flush
    return (lambda chunk: chunk), (lambda: b"")


def write_artifact(chunks: Iterable[bytes], directory: Path, name: str, compression: Compression) -> Artifact:
    """Write the stream to ``directory/name.tar[.gz|.zst]`` and its checksum beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}{SUFFIXES[compression]}"
    partial = path.with_name(path.name + ".partial")
    compress, flush = _compressor(compression)
    digest = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as handle:
            for chunk in itertools.chain(map(compress, chunks), _lazy(flush)):
                if chunk:
                    handle.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    sha256 = digest.hexdigest()
    checksum_path(path).write_text(f"{sha256}  {path.name}\n")
    return Artifact(path=path, name=name, sha256=sha256, size=size)


def _lazy(function: Callable[[], bytes]) -> Iterator[bytes]:
    # The compressor's tail, called only once every chunk has gone through it.
    yield function()


def expected_checksum(path: Path) -> str | None:
    """The checksum recorded beside the artifact, if there is one."""
    recorded = checksum_path(path)
    if not recorded.is_file():
        return None
    text = recorded.read_text().split()
    if not text or len(text[0]) != 64:
        raise ArtifactError(f"{recorded} is not a sha256sum line; the artifact cannot be checked.")
    return text[0].lower()


def verify(path: Path, expected: str | None = None) -> str:
    """Check the artifact against its checksum; return the sha256. Raises ArtifactError on a mismatch."""
    if not path.is_file():
        raise ArtifactError(f"the artifact {path} does not exist. Check 'artifact-path' and the download step.")
    want = expected or expected_checksum(path)
    if want is None:
        raise ArtifactError(
            f"there is no checksum for {path} ({checksum_path(path).name} is missing), so it cannot be trusted. "
            "Upload the .sha256 file with the tar."
        )
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != want:
        raise ArtifactError(
            f"the artifact {path} is corrupted: its sha256 is {actual}, but {want} was recorded when it was "
            "saved. Download it again, or rebuild."
        )
    return actual


def read_image_tar(path: Path) -> Iterator[bytes]:
    """The artifact's tar stream, decompressed on the fly whatever compression it was written with."""
    with path.open("rb") as handle:
        head = handle.read(4)
        handle.seek(0)
        decompressor: _Decompressor
        if head.startswith(_ZSTD_MAGIC):
            kind, decompressor = "zstd", zstandard.ZstdDecompressor().decompressobj()
        elif head.startswith(_GZIP_MAGIC):
            kind, decompressor = "gzip", zlib.decompressobj(31)
        else:
            while chunk := handle.read(CHUNK_SIZE):
                yield chunk
            return
        try:
            while chunk := handle.read(CHUNK_SIZE):
                yield decompressor.decompress(chunk)
            yield decompressor.flush()
        except (zlib.error, zstandard.ZstdError) as exc:
            raise ArtifactError(f"the artifact {path} is not a valid {kind} stream ({exc}).") from None
        if not decompressor.eof:
            raise ArtifactError(f"the artifact {path} is a truncated {kind} stream.")
