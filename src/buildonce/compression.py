"""How the artifact tar is compressed: the value type of input 'artifact-compression', which the artifact
writer and reader (``buildonce.artifact``) act on, kept apart so that reading the inputs loads neither."""

from __future__ import annotations

import enum


class Compression(enum.Enum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"
