"""Reuse by build key: find an image built from the same content, and promote it to this commit (the key
itself is ``commands.key``'s, computed before buildx starts; this runs beside or instead of the build).

A promotion never runs buildx. The tested image's config is written again with this commit's labels (those
naming the commit, plus ``promoted-from``), each platform's manifest again around it with the very same layer
blobs, and an index over them; then the publishing step tags and verifies the new digest as it would a build's.
The image found by its key is never moved or changed: its lookup tag keeps naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from buildonce.buildkey import lookup_tag, promoted_annotations, promoted_labels
from buildonce.errors import RegistryError, VerificationError
from buildonce.labels import Keys
from buildonce.oci import Manifest, is_attestation, json_object
from buildonce.references import ImageName

if TYPE_CHECKING:
    from buildonce.retry import RetryPolicy


class PromotionRegistry(Protocol):
    """What a promotion asks of the registry (``buildonce.registry.client.Registry`` is the real one)."""

    def resolve(self, image: ImageName, reference: str) -> str | None: ...

    def get_manifest(self, image: ImageName, reference: str) -> Manifest | None: ...

    def put_manifest(self, image: ImageName, tag: str, manifest: Manifest) -> str: ...

    def get_blob(self, image: ImageName, digest: str) -> bytes: ...

    def push_blob(self, image: ImageName, data: bytes) -> str: ...


# --- looking it up ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    image: ImageName
    digest: str
    labels: dict[str, str]


def lookup(
    registry: PromotionRegistry, policy: RetryPolicy, images: tuple[ImageName, ...], key: str, keys: Keys
) -> Found | None:
    """The image the key's lookup tag names in the first repository that has one, if its label carries that
    very key: one look-up per repository, then its manifest and config."""
    tag = lookup_tag(key)
    for image in images:
        digest, _ = policy.call(partial(registry.resolve, image, tag), f"look up {image.with_tag(tag)}")
        if digest is None:
            continue
        labels, _ = policy.call(partial(_labels, registry, image, digest), f"read labels of {image.with_tag(tag)}")
        if labels.get(keys.build_key) == key:
            return Found(image, digest, labels)
    return None


def _labels(registry: PromotionRegistry, image: ImageName, digest: str) -> dict[str, str]:
    manifest = registry.get_manifest(image, digest)
    if manifest is None:
        raise RegistryError(f"{image.with_digest(digest)} cannot be read (yet)", transient=True)
    body = manifest.json()
    if manifest.is_index:
        children = [entry for entry in body.get("manifests") or [] if not is_attestation(entry)]
        if not children:
            return {}
        child = registry.get_manifest(image, children[0]["digest"])
        if child is None:
            raise RegistryError(f"{image.with_digest(digest)} lists a manifest it lacks (yet)", transient=True)
        body = child.json()
    config = json_object(registry.get_blob(image, body["config"]["digest"]))
    found = (config.get("config") or {}).get("Labels") or {}
    return {str(key): str(value) for key, value in found.items()}


def record_key(
    registry: PromotionRegistry, policy: RetryPolicy, images: tuple[ImageName, ...], digest: str, key: str
) -> None:
    """Point the key's lookup tag at ``digest`` in every repository that has no image under it yet; one that
    has keeps naming the image it found first."""
    tag = lookup_tag(key)
    manifest: Manifest | None = None
    for image in images:
        if policy.call(partial(registry.resolve, image, tag), f"look up {image.with_tag(tag)}")[0] is not None:
            continue
        if manifest is None:
            manifest, _ = policy.call(
                partial(registry.get_manifest, image, digest), f"read {image.with_digest(digest)}"
            )
            if manifest is None:
                raise VerificationError(f"{image.with_digest(digest)} is missing from the registry.")
        policy.call(partial(registry.put_manifest, image, tag, manifest), f"tag {image.with_tag(tag)}")


# --- promoting ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Promoted:
    digest: str
    labels: dict[str, str]
    uploaded: int
    """Bytes of configs and manifests written (no layer is ever uploaded)."""
    dropped: int = 0
    """Attestations of the tested image left out: they describe its digests, not the promoted ones."""


def promote_image(
    registry: PromotionRegistry, policy: RetryPolicy, found: Found, planned: Mapping[str, str], keys: Keys
) -> Promoted:
    """Write the tested image again for this commit, in its own repository, by digest (no tag yet)."""
    image = found.image
    top = policy.call(partial(registry.get_manifest, image, found.digest), f"read {image.with_digest(found.digest)}")[0]
    if top is None:
        raise VerificationError(f"{image.with_digest(found.digest)} is missing from the registry.")
    labels = promoted_labels(found.labels, planned, keys, found.digest)
    writer = _Writer(registry=registry, policy=policy, repository=image, labels=labels, planned=planned, keys=keys)
    if not top.is_index:
        return Promoted(writer.platform_image(top).digest, labels, writer.uploaded)
    body = top.json()
    entries = []
    dropped = 0
    for entry in body.get("manifests") or []:
        if is_attestation(entry):
            dropped += 1
            continue
        child = policy.call(partial(registry.get_manifest, image, entry["digest"]), f"read {entry['digest']}")[0]
        if child is None:
            raise VerificationError(f"{image.with_digest(found.digest)} lists {entry['digest']}, which is missing.")
        written = writer.platform_image(child)
        entries.append({**entry, "mediaType": written.media_type, "digest": written.digest, "size": len(written.raw)})
    index = {**body, "manifests": entries}
    if isinstance(body.get("annotations"), dict):
        index["annotations"] = promoted_annotations(body["annotations"], planned, keys)
    written = writer.put(Manifest.from_bytes(_dump(index), top.media_type))
    return Promoted(written.digest, labels, writer.uploaded, dropped)


def _dump(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class _Writer:
    registry: PromotionRegistry
    policy: RetryPolicy
    repository: ImageName
    labels: dict[str, str]
    planned: Mapping[str, str]
    keys: Keys
    uploaded: int = 0

    def platform_image(self, manifest: Manifest) -> Manifest:
        """One platform's image: its config with the new labels, and a manifest naming the same layers."""
        body = manifest.json()
        config_digest = body["config"]["digest"]
        config = json_object(
            self.policy.call(partial(self.registry.get_blob, self.repository, config_digest), f"read {config_digest}")[
                0
            ]
        )
        settings = dict(config.get("config") or {})
        settings["Labels"] = self.labels
        raw = _dump({**config, "config": settings})
        digest, _ = self.policy.call(
            partial(self.registry.push_blob, self.repository, raw), f"push the config of {self.repository}"
        )
        self.uploaded += len(raw)
        rewritten = {**body, "config": {**body["config"], "digest": digest, "size": len(raw)}}
        if isinstance(body.get("annotations"), dict):
            rewritten["annotations"] = promoted_annotations(body["annotations"], self.planned, self.keys)
        return self.put(Manifest.from_bytes(_dump(rewritten), manifest.media_type))

    def put(self, manifest: Manifest) -> Manifest:
        stored, _ = self.policy.call(
            partial(self.registry.put_manifest, self.repository, manifest.digest, manifest), f"push {manifest.digest}"
        )
        if stored != manifest.digest:
            raise VerificationError(f"{self.repository.registry} stored {manifest.digest} as {stored}.")
        self.uploaded += len(manifest.raw)
        return manifest
