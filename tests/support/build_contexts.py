"""Small build contexts and unique names for the end-to-end tests (nothing is pulled: FROM scratch)."""

from __future__ import annotations

import uuid
from pathlib import Path


def unique(prefix: str) -> str:
    """A repository name no other test (or earlier run against the same registry) has used."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def scratch_context(directory: Path, text: str = "hello") -> Path:
    """A FROM scratch context with one file, whose content sets the image's layer."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hello.txt").write_text(text)
    (directory / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    return directory
