"""A registry and an engine in memory, with the methods the commands ask of the real ones (``commands.seams``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from buildonce.docker.config import Login
from buildonce.docker.engine import LocalImage
from buildonce.errors import RegistryError
from buildonce.labels import REVISION
from buildonce.oci import Manifest, sha256_digest
from buildonce.references import ImageName, Reference

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER = "f" * 40
IMAGE = "registry.test/acme/widget"


def manifest_for(sha: str, config: str = "sha256:" + "c" * 64) -> Manifest:
    raw = json.dumps(
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"digest": config}, "x": sha}
    )
    return Manifest.from_bytes(raw.encode(), "application/vnd.oci.image.manifest.v1+json")


@dataclass
class FakeRegistry:
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)
    puts: list[str] = field(default_factory=list)
    label_reads: int = 0
    failures: int = 0
    copies: list[tuple[str, str]] = field(default_factory=list)
    held: set[tuple[str, str]] = field(default_factory=set)
    """(repository, digest) pairs a copy put there, under no tag."""
    layout: tuple[Manifest, str] = field(default_factory=lambda: (manifest_for(SHA), SHA))
    """What push_layout finds in the layout: a manifest and the commit it was built from."""
    blobs: dict[str, bytes] = field(default_factory=dict)

    def store(self, manifest: Manifest, sha: str) -> str:
        self.manifests[manifest.digest] = manifest
        self.commits[manifest.digest] = sha
        return manifest.digest

    def resolve(self, image: ImageName, reference: str) -> str | None:
        if self.failures:
            self.failures -= 1
            raise RegistryError("503", transient=True)
        if reference in self.manifests:
            held = (image.name, reference) in self.held or any(
                name == image.name and digest == reference for (name, _), digest in self.tags.items()
            )
            return reference if held else None
        return self.tags.get((image.name, reference))

    def get_manifest(self, image: ImageName, reference: str) -> Manifest | None:
        digest = self.resolve(image, reference)
        return self.manifests.get(digest) if digest else None

    def labels(self, image: ImageName, reference: str) -> dict[str, str] | None:
        self.label_reads += 1
        digest = self.resolve(image, reference)
        return {REVISION: self.commits[digest]} if digest in self.commits else None

    def put_manifest(self, image: ImageName, tag: str, manifest: Manifest) -> str:
        self.puts.append(tag)
        self.tags[(image.name, tag)] = manifest.digest
        return manifest.digest

    def copy_image(self, source: ImageName, digest: str, target: ImageName) -> None:
        self.copies.append((source.name, target.name))
        self.held.add((target.name, digest))

    def get_blob(self, image: ImageName, digest: str) -> bytes:
        return self.blobs[digest]

    def push_blob(self, image: ImageName, data: bytes) -> str:
        digest = sha256_digest(data)
        self.blobs[digest] = data
        return digest

    def push_layout(self, layout: Path, references: Sequence[Reference]) -> str:
        manifest, sha = self.layout
        digest = self.store(manifest, sha)
        for ref in references:
            self.put_manifest(ref.image, ref.tag, manifest)
        return digest

    def close(self) -> None:
        pass


@dataclass
class FakeEngine:
    registry: FakeRegistry
    names: dict[str, tuple[Manifest, str]] = field(default_factory=dict)
    """What each local name holds when it is pushed: a manifest and the commit it was built from."""
    pushed: list[str] = field(default_factory=list)
    containerd_store: bool = True

    def push(self, reference: Reference, timeout: float) -> str:
        self.pushed.append(str(reference))
        manifest, sha = self.names[str(reference)]
        digest = self.registry.store(manifest, sha)
        self.registry.tags[(reference.image.name, reference.tag)] = digest
        return digest

    pulled: list[str] = field(default_factory=list)
    tagged: list[tuple[str, str]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    loaded: list[bytes] = field(default_factory=list)
    local: dict[str, LocalImage] = field(default_factory=dict)
    platform: str = "linux/amd64"

    def login(self, login: Login) -> None:
        self.logins.append(login.registry)

    def pull(self, image: ImageName, digest: str, timeout: float, *, platform: str = "") -> None:
        if self.registry.resolve(image, digest) != digest:
            raise RegistryError(f"{image}@{digest}: not found")
        self.pulled.append(image.with_digest(digest))

    def tag(self, source: str, reference: Reference) -> None:
        self.tagged.append((source, str(reference)))
        if source in self.local:
            self.local[str(reference)] = self.local[source]

    def inspect(self, reference: str) -> LocalImage | None:
        return self.local.get(reference)

    def save(self, references: Iterable[str], chunk_size: int) -> Iterator[bytes]:
        yield json.dumps(sorted(references)).encode()

    def load(self, data: Iterable[bytes]) -> list[str]:
        self.loaded.extend(data)
        return []

    def close(self) -> None:
        pass
