"""Image names, tags and references, checked against the grammar registries enforce.

The patterns follow the distribution reference grammar: a lower-case repository path with an optional
``host[:port]`` in front, and tags of at most 128 characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from buildonce.errors import InputError

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"

TAG_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST_PATTERN = re.compile(r"sha256:[a-f0-9]{64}")
_DOMAIN_RE = re.compile(_DOMAIN)
_PATH_RE = re.compile(_PATH)
MAX_NAME_LENGTH = 255

DOCKER_HUB = "docker.io"


def is_valid_tag(tag: str) -> bool:
    return TAG_PATTERN.fullmatch(tag) is not None


@dataclass(frozen=True, order=True)
class ImageName:
    """A repository name as the user wrote it, e.g. ``ghcr.io/acme/app`` or ``127.0.0.1:5000/app``."""

    name: str

    @property
    def registry(self) -> str:
        """The registry host as Docker resolves it (``docker.io`` when the name has none)."""
        first, sep, _ = self.name.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            return first
        return DOCKER_HUB

    @property
    def repository(self) -> str:
        """The path inside the registry, with Docker Hub's implicit ``library/`` made explicit."""
        first, sep, rest = self.name.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            return rest
        return self.name if "/" in self.name else f"library/{self.name}"

    @property
    def basename(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def with_tag(self, tag: str) -> str:
        return f"{self.name}:{tag}"

    def with_digest(self, digest: str) -> str:
        return f"{self.name}@{digest}"

    def __str__(self) -> str:
        return self.name


def _split_domain(text: str) -> tuple[str, str]:
    first, sep, rest = text.partition("/")
    # Docker also reads an upper-case first component as a host; here that is almost always a mistyped
    # Docker Hub name, so it is checked (and rejected) as a path instead.
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return "", text


def parse_image_name(text: str, *, source: str = "images") -> ImageName:
    """Check a repository name (no tag, no digest); errors name the input it came from."""
    name = text.strip()
    hint = (
        "An image name is a lower-case repository path with an optional registry host in front, "
        "e.g. ghcr.io/acme/app or 127.0.0.1:5000/app."
    )
    if not name:
        raise InputError(f"input '{source}' has an empty image name. {hint}")
    if "@" in name or (":" in name.rsplit("/", 1)[-1]):
        raise InputError(
            f"input '{source}': {name!r} carries a tag or digest; give the name alone "
            f"and put extra tags in the 'tags' input. {hint}"
        )
    domain, path = _split_domain(name)
    if domain and not _DOMAIN_RE.fullmatch(domain):
        raise InputError(f"input '{source}': {name!r} has an invalid registry host {domain!r}. {hint}")
    if not _PATH_RE.fullmatch(path):
        if path != path.lower() and _PATH_RE.fullmatch(path.lower()):
            # ${{ github.repository }} keeps the owner's capitals; registries want lower case.
            lowered = f"{domain}/{path.lower()}" if domain else path.lower()
            raise InputError(
                f"input '{source}': {name!r} has upper-case letters, which image names may not; "
                f"use {lowered!r} (in a workflow, lower-case the repository name first)."
            )
        detail = "upper-case letters" if path != path.lower() else "characters or separators not allowed"
        raise InputError(f"input '{source}': {name!r} is not a valid image name ({detail}). {hint}")
    if len(name) > MAX_NAME_LENGTH:
        raise InputError(f"input '{source}': {name!r} is longer than {MAX_NAME_LENGTH} characters.")
    return ImageName(name)


@dataclass(frozen=True, order=True)
class Reference:
    """A full ``name:tag`` reference."""

    image: ImageName
    tag: str

    def __str__(self) -> str:
        return self.image.with_tag(self.tag)


def split_tag(text: str) -> tuple[str, str]:
    """``name:tag`` as (name, tag), unchecked; (text, "") when there is no tag (a registry's port is none)."""
    head, sep, tag = text.rpartition(":")
    return (head, tag) if sep and "/" not in tag else (text, "")


def parse_reference(text: str, *, source: str) -> Reference:
    """Check a full ``name:tag`` reference, e.g. one from metadata-action's output."""
    value = text.strip()
    if "@" in value:
        raise InputError(f"input '{source}': {value!r} is a digest reference; give name:tag.")
    head, tag = split_tag(value)
    if not tag:
        raise InputError(f"input '{source}': {value!r} has no tag; give name:tag, e.g. ghcr.io/acme/app:v1.")
    check_tag(tag, source=source)
    return Reference(parse_image_name(head, source=source), tag)


def check_tag(tag: str, *, source: str) -> str:
    if not is_valid_tag(tag):
        raise InputError(
            f"input '{source}': {tag!r} is not a valid tag. A tag is 1 to 128 characters of letters, digits, "
            "'_', '.' and '-', and does not start with '.' or '-'."
        )
    return tag


def looks_like_reference(text: str) -> bool:
    """Whether an entry of the ``tags`` input is a full reference rather than a bare tag name."""
    return "/" in text or ":" in text
