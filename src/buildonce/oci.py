"""OCI values, pure: media types, manifests by their exact bytes, platform selection in an index, and
building an index from per-platform manifests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from buildonce.platforms import matches

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST))

_ATTESTATION = "attestation-manifest"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Manifest:
    media_type: str
    digest: str
    raw: bytes = field(repr=False)
    """The exact bytes: the digest is their hash, so re-serialising the JSON would make another manifest."""

    @classmethod
    def from_bytes(cls, raw: bytes, media_type: str | None = None) -> Manifest:
        return cls(media_type or _media_type_in(raw), sha256_digest(raw), raw)

    def json(self) -> dict[str, Any]:
        data = json.loads(self.raw)
        if not isinstance(data, dict):
            raise TypeError(f"manifest {self.digest} is not a JSON object")
        return data

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES


def is_attestation(descriptor: Mapping[str, Any]) -> bool:
    """BuildKit lists provenance and SBOMs in the index as platform unknown/unknown manifests."""
    annotations = descriptor.get("annotations") or {}
    platform = descriptor.get("platform") or {}
    return annotations.get("vnd.docker.reference.type") == _ATTESTATION or (
        platform.get("os"),
        platform.get("architecture"),
    ) == ("unknown", "unknown")


def select_manifest(index: Mapping[str, Any], platform: str | None) -> dict[str, Any] | None:
    """The entry of an index for ``platform`` (``os/arch[/variant]``), or the first image when None."""
    entries = [entry for entry in index.get("manifests") or [] if isinstance(entry, dict) and "digest" in entry]
    images = [entry for entry in entries if not is_attestation(entry)]
    if platform is None:
        return images[0] if images else None
    for entry in images:
        have = entry.get("platform") or {}
        if matches(platform, have.get("os"), have.get("architecture"), have.get("variant")):
            return entry
    return None


def platforms_of(index: Mapping[str, Any]) -> list[str]:
    named = []
    for entry in index.get("manifests") or []:
        if isinstance(entry, dict) and not is_attestation(entry):
            plat = entry.get("platform") or {}
            named.append(
                "/".join(part for part in (plat.get("os"), plat.get("architecture"), plat.get("variant")) if part)
            )
    return named


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def declared_media_type(raw: bytes) -> str | None:
    declared = json_object(raw).get("mediaType")
    return declared if isinstance(declared, str) and declared else None


def _media_type_in(raw: bytes) -> str:
    # An OCI manifest or index may leave mediaType out; a "manifests" list still tells an index apart.
    return declared_media_type(raw) or (OCI_INDEX if "manifests" in json_object(raw) else OCI_MANIFEST)


def descriptor(manifest: Manifest, platform: str | None = None) -> dict[str, Any]:
    """The descriptor an index lists ``manifest`` by, with its ``os/arch[/variant]`` when given."""
    entry: dict[str, Any] = {"mediaType": manifest.media_type, "digest": manifest.digest, "size": len(manifest.raw)}
    if platform:
        names = ("os", "architecture", "variant")
        entry["platform"] = dict(zip(names, platform.split("/"), strict=False))
    return entry


def build_index(children: Sequence[tuple[Manifest, str]], annotations: Mapping[str, str] | None = None) -> Manifest:
    """An OCI image index of per-platform manifests (each with its ``os/arch[/variant]``), in that order."""
    return index_of([descriptor(manifest, platform) for manifest, platform in children], annotations)


def index_of(entries: Sequence[Mapping[str, Any]], annotations: Mapping[str, str] | None = None) -> Manifest:
    """An OCI image index listing ``entries`` (descriptors) in that order, in compact JSON with sorted keys:
    the same entries and annotations always make the same bytes, so the same digest."""
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [dict(entry) for entry in entries],
    }
    if annotations:
        body["annotations"] = dict(annotations)
    return Manifest.from_bytes(json.dumps(body, separators=(",", ":"), sort_keys=True).encode(), OCI_INDEX)
