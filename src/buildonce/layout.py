"""OCI image layout directories, as ``buildx build --output type=oci,tar=false`` writes them."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildonce.errors import ArtifactError
from buildonce.oci import Manifest
from buildonce.references import DIGEST_PATTERN

CHUNK_SIZE = 1 << 20
_SKIP = frozenset({"ingest"})
"""BuildKit's scratch space for blobs being written; not part of the image."""


def layout_size(layout: Path) -> int:
    """Bytes of every blob in the layout (all platforms, attestations included)."""
    blobs = layout / "blobs"
    return sum(path.stat().st_size for path in blobs.rglob("*") if path.is_file()) if blobs.is_dir() else 0


def layout_tar(layout: Path) -> Iterator[bytes]:
    """Stream the layout as a tar, which ``docker load`` accepts, without holding it in memory.

    A thread writes the tar into a pipe while this generator reads it out in fixed-size chunks, so a
    multi-gigabyte layer goes through a megabyte at a time.
    """
    import tarfile  # for the build's load alone: the registry client reads layouts without it

    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def write() -> None:
        try:
            with os.fdopen(write_fd, "wb") as sink, tarfile.open(fileobj=sink, mode="w|") as archive:
                for entry in sorted(layout.iterdir()):
                    if entry.name not in _SKIP:
                        archive.add(entry, arcname=entry.name)
        except BrokenPipeError:
            pass  # the reader stopped early; it has its own reason
        except BaseException as exc:  # handed to the reading side below
            failure.append(exc)

    writer = threading.Thread(target=write, name="layout-tar", daemon=True)
    writer.start()
    with os.fdopen(read_fd, "rb") as source:
        while chunk := source.read(CHUNK_SIZE):
            yield chunk
    writer.join()
    if failure:
        raise failure[0]


@dataclass(frozen=True)
class LayoutBlob:
    digest: str
    size: int
    path: Path


@dataclass(frozen=True)
class LayoutImage:
    top: Manifest
    children: tuple[Manifest, ...]
    """Every manifest below the top one, each after the manifests it refers to: the order to push them in."""
    blobs: tuple[LayoutBlob, ...]


def read_layout(layout: Path) -> LayoutImage:
    """The image of an OCI layout directory: its one top-level manifest, what it refers to, and the blobs."""
    index = _read_layout_json(layout / "index.json", layout)
    entries = index.get("manifests")
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        count = len(entries) if isinstance(entries, list) else 0
        raise ArtifactError(f"{layout}/index.json lists {count} manifests; a buildx OCI export lists exactly one.")
    children: dict[str, Manifest] = {}
    blobs: dict[str, LayoutBlob] = {}
    top = _walk_layout(layout, entries[0], children, blobs)
    return LayoutImage(top, tuple(children.values()), tuple(blobs.values()))


def _read_layout_json(path: Path, layout: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing: {layout} is not an OCI image layout.") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} is not a JSON object.")
    return data


def _layout_blob(layout: Path, descriptor: Mapping[str, Any]) -> LayoutBlob:
    digest = descriptor.get("digest")
    # The digest becomes a path; only a well-formed sha256 one may, so that no entry can point outside.
    if not isinstance(digest, str) or not DIGEST_PATTERN.fullmatch(digest):
        raise ArtifactError(f"{layout}: a descriptor has an unsupported digest {digest!r}.")
    path = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    size = descriptor.get("size")
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        raise ArtifactError(f"{layout}: blob {digest} is missing; the layout is incomplete.") from None
    if isinstance(size, int) and size != actual:
        raise ArtifactError(f"{layout}: blob {digest} has {actual} bytes, its descriptor says {size}.")
    return LayoutBlob(digest, actual, path)


def _walk_layout(
    layout: Path, descriptor: Mapping[str, Any], children: dict[str, Manifest], blobs: dict[str, LayoutBlob]
) -> Manifest:
    blob = _layout_blob(layout, descriptor)
    raw = blob.path.read_bytes()
    manifest = Manifest.from_bytes(raw, descriptor.get("mediaType") or None)
    if manifest.digest != blob.digest:
        raise ArtifactError(f"{layout}: manifest {blob.digest} is corrupted (its content hashes to {manifest.digest}).")
    try:
        body = manifest.json()
    except (ValueError, TypeError):
        raise ArtifactError(f"{layout}: manifest {blob.digest} is not a JSON object.") from None
    if "manifests" in body:
        for entry in body["manifests"]:
            if isinstance(entry, dict) and entry.get("digest") not in children:
                children[entry["digest"]] = _walk_layout(layout, entry, children, blobs)
        return manifest
    for entry in [body.get("config"), *(body.get("layers") or [])]:
        if not isinstance(entry, dict) or entry.get("digest") in blobs:
            continue
        try:
            blobs[entry["digest"]] = _layout_blob(layout, entry)
        except ArtifactError:
            if not entry.get("urls"):
                raise
            # A foreign (non-distributable) layer is fetched from its URLs; registries do not hold it.
    return manifest
