"""The image tar artifact: the fallback a downstream job loads when the registry cannot serve the image.

Saving streams ``docker save`` through an optional compressor to disk in fixed-size chunks, hashing as it
goes, so memory stays flat whatever the image size. A ``.sha256`` file in ``sha256sum`` format sits beside
the tar. In front of docker's own files the tar carries the manifests the registry serves for the image,
in their exact bytes (see ``buildonce.tarimage``): the tar is then all a consumer needs to prove a pinned
digest, whatever image store saved it, and nothing extra has to travel beside it. Engines load nothing
from those members. Loading checks the checksum first and decompresses on the fly; the tar's own JSON
files are read before it is loaded, so that what it holds is known without asking the engine.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from buildonce.compression import Compression
from buildonce.errors import ArtifactError
from buildonce.oci import sha256_digest
from buildonce.tarimage import PROOF_DIRECTORY, TarContents, member_path, parse_json

if TYPE_CHECKING:
    from buildonce.oci import Manifest

CHUNK_SIZE = 1 << 20


SUFFIXES = {Compression.NONE: ".tar", Compression.GZIP: ".tar.gz", Compression.ZSTD: ".tar.zst"}
GZIP_LEVEL = 1
"""Fast rather than small: the artifact lives a day and upload-artifact zips it again."""
ZSTD_LEVEL = 3
MAX_JSON_MEMBER = 4 << 20
"""Manifests, configs and indexes are kilobytes; a bigger member is a layer, never read into memory."""
MAX_JSON_TOTAL = 64 << 20
MAX_PROOF_CHILDREN = 32

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


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _compressor(compression: Compression) -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
    if compression is Compression.GZIP:
        gzip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        return gzip.compress, gzip.flush
    if compression is Compression.ZSTD:
        import zstandard  # only a build that saves a zstd artifact loads it

        zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        return zstd.compress, zstd.flush
    return (lambda chunk: chunk), (lambda: b"")


def write_artifact(
    chunks: Iterable[bytes], directory: Path, name: str, compression: Compression, manifests: Iterable[bytes] = ()
) -> Artifact:
    """Write the stream to ``directory/name.tar[.gz|.zst]`` and its checksum beside it, with ``manifests``
    (the registry's, in their exact bytes) as tar members in front of it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}{SUFFIXES[compression]}"
    partial = path.with_name(path.name + ".partial")
    compress, flush = _compressor(compression)
    digest = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as handle:
            stream = itertools.chain([proof_members(manifests)], chunks)
            for chunk in itertools.chain(map(compress, stream), _lazy(flush)):
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


def verify(path: Path) -> str:
    """Check the artifact against its checksum; return the sha256. Raises ArtifactError on a mismatch."""
    if not path.is_file():
        raise ArtifactError(f"the artifact {path} does not exist. Check 'artifact-path' and the download step.")
    want = expected_checksum(path)
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
    import zstandard  # loaded by the commands that read an artifact, never by plan

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


class _ChunkReader(io.RawIOBase):
    """A file object over a stream of byte chunks, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._chunk = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._chunk:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._chunk = memoryview(chunk)
        size = min(len(buffer), len(self._chunk))
        buffer[:size] = self._chunk[:size]
        self._chunk = self._chunk[size:]
        return size


def scan_image_tar(path: Path) -> TarContents:
    """The tar's small JSON files (manifest.json, index.json, manifests, configs), read in one pass with
    memory bounded by ``MAX_JSON_TOTAL``; layers are skipped over."""
    import tarfile  # not at import time: the input parser imports this module for Compression

    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=_ChunkReader(read_image_tar(path)), mode="r|") as archive:
            for member in archive:
                if not member.isreg() or member.size > MAX_JSON_MEMBER:
                    continue
                handle = archive.extractfile(member)
                data = handle.read() if handle else b""
                if data[:1] not in (b"{", b"["):
                    continue
                total += len(data)
                if total > MAX_JSON_TOTAL:
                    raise ArtifactError(
                        f"the artifact {path} holds more than {MAX_JSON_TOTAL >> 20} MiB of JSON files; "
                        "it is not an image tar written by docker save."
                    )
                files[member_path(member.name)] = data
    except tarfile.TarError as exc:
        raise ArtifactError(f"the artifact {path} is not a readable tar archive ({exc}).") from None
    return TarContents(files)


def pushed_manifests(fetch: Callable[[str], Manifest | None], reference: str) -> list[bytes]:
    """The exact bytes the registry serves for ``reference`` and, for an index, for each of its images."""
    top = fetch(reference)
    if top is None:
        return []
    found = [top.raw]
    document = parse_json(top.raw, f"the manifest of {reference}")
    entries = document.get("manifests") if isinstance(document, dict) else None
    if isinstance(entries, list):
        from buildonce.oci import is_attestation

        children = [e for e in entries if isinstance(e, dict) and isinstance(e.get("digest"), str)]
        for entry in [e for e in children if not is_attestation(e)][:MAX_PROOF_CHILDREN]:
            child = fetch(entry["digest"])
            if child is not None:
                found.append(child.raw)
    return found


def proof_members(manifests: Iterable[bytes]) -> bytes:
    """Tar members holding each manifest under ``PROOF_DIRECTORY``, named by its digest, to go in front of
    docker save's stream (a tar is its members one after the other; docker's own end the archive)."""
    import tarfile  # not at import time: the input parser imports this module for Compression

    out = bytearray()
    for raw in manifests:
        info = tarfile.TarInfo(f"{PROOF_DIRECTORY}/{sha256_digest(raw).removeprefix('sha256:')}")
        info.size = len(raw)
        info.mode = 0o444
        out += info.tobuf(format=tarfile.USTAR_FORMAT)
        out += raw + b"\0" * (-len(raw) % tarfile.BLOCKSIZE)
    return bytes(out)
