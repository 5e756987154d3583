"""OCI image layout directories, as ``buildx build --output type=oci,tar=false`` writes them."""

from __future__ import annotations

import os
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

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
