"""What an image tar holds, read from its own files: the images it names, their configs, and the digests
it can prove.

``docker save`` writes ``manifest.json`` (each image's config and layers, by name) and, since Docker 25,
an OCI layout (``index.json`` naming each image's manifest or index). Which of the two an engine loads
decides the image id it gives the image: the classic store loads ``manifest.json`` and names the image by
its config digest, the containerd store loads the OCI index and names it by the descriptor's digest. So the
id the engine must show after loading is known before loading.

A registry digest is proven by a manifest in the tar whose bytes hash to it and whose config (for an index:
its image for the engine's platform) is the config of the image the tar holds: the config names the
layers' content, which the engine checks as it loads them. The classic store's tar holds no registry
manifest, so the build puts the one it pushed into the tar (``PROOF_DIRECTORY``); who wrote it does not
matter, since its bytes are checked against the digest.

Everything here is pure: the tar's small JSON files in, values or an ``ArtifactError`` out.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from buildonce.docker.config import normalize_registry
from buildonce.errors import ArtifactError
from buildonce.oci import select_manifest, sha256_digest
from buildonce.references import ImageName, split_tag

PROOF_DIRECTORY = "buildonce/manifests/sha256"
"""Where the build puts the pushed manifests' exact bytes inside the tar; engines load nothing from here."""
CONTAINERD_NAME = "io.containerd.image.name"
OCI_REF_NAME = "org.opencontainers.image.ref.name"


def member_path(name: str) -> str:
    """A tar member's name as a plain relative path (``./blobs/x`` and ``blobs//x`` are ``blobs/x``)."""
    return posixpath.normpath("/" + name).lstrip("/")


@dataclass(frozen=True)
class TarContents:
    """The small JSON files of an image tar (manifests, configs, indexes), by path."""

    files: Mapping[str, bytes]

    @cached_property
    def by_digest(self) -> dict[str, bytes]:
        return {sha256_digest(data): data for data in self.files.values()}

    def blob(self, digest: str) -> bytes | None:
        """The bytes that hash to ``digest``, wherever in the tar they are."""
        return self.by_digest.get(digest)


@dataclass(frozen=True)
class HeldImage:
    """One image the tar names, as the engine will load it."""

    name: str
    """The reference the tar gives it, e.g. ``127.0.0.1:5000/app:pr-1-abc1234``."""
    tag: str
    config_digest: str
    config: Mapping[str, Any] = field(repr=False)
    loaded_id: str
    """The id the engine gives it once loaded; empty when it cannot be known (the containerd store loading
    a tar without an OCI index makes a manifest of its own)."""

    @property
    def labels(self) -> dict[str, str]:
        settings = self.config.get("config")
        found = settings.get("Labels") if isinstance(settings, dict) else None
        return {str(key): str(value) for key, value in found.items()} if isinstance(found, dict) else {}

    @property
    def identity(self) -> str:
        return self.loaded_id or self.config_digest


def repository_key(name: str) -> tuple[str, str]:
    """(registry, repository) as Docker resolves them, so that ``acme/app`` and ``docker.io/acme/app`` match."""
    image = ImageName(name)
    return normalize_registry(image.registry), image.repository


def parse_json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ArtifactError(
            f"{what} is not valid JSON; the artifact is damaged or was not written by docker save."
        ) from None


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ArtifactError(f"{what} is not a JSON object; the artifact is damaged or was not written by docker save.")
    return value


def _object_or_empty(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list_or_empty(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _digest_of(descriptor: Mapping[str, Any], what: str) -> str:
    digest = descriptor.get("digest")
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise ArtifactError(f"{what} names no sha256 digest.")
    return digest


def platform_entry(index: Mapping[str, Any], platform: str) -> dict[str, Any] | None:
    """The image of an index for ``os/arch[/variant]``, leaving out BuildKit's attestation manifests."""
    return select_manifest(index, platform)  # one platform rule for the registry and the tar


def image_manifest(contents: TarContents, digest: str, platform: str, what: str) -> dict[str, Any] | None:
    """The image manifest ``digest`` names (for an index, its image for ``platform``), if the tar holds it."""
    raw = contents.blob(digest)
    if raw is None:
        return None
    document = _object(parse_json(raw, f"{what} ({digest})"), f"{what} ({digest})")
    if "manifests" in document:
        entry = platform_entry(document, platform)
        if entry is None:
            return None
        return image_manifest(contents, _digest_of(entry, f"the {platform} entry of {digest}"), platform, what)
    return document


def config_of(manifest: Mapping[str, Any], what: str) -> str:
    config = manifest.get("config")
    if not isinstance(config, dict):
        raise ArtifactError(f"{what} is not an image manifest: it names no config.")
    return _digest_of(config, f"the config of {what}")


def _config(contents: TarContents, digest: str, name: str) -> dict[str, Any]:
    raw = contents.blob(digest)
    if raw is None:
        raise ArtifactError(f"the tar names {digest} as the config of {name}, but does not hold it.")
    return _object(parse_json(raw, f"the config of {name}"), f"the config of {name}")


def _docker_entries(contents: TarContents) -> list[dict[str, Any]]:
    raw = contents.files.get("manifest.json")
    if raw is None:
        return []
    entries = parse_json(raw, "the tar's manifest.json")
    if not isinstance(entries, list):
        raise ArtifactError("the tar's manifest.json is not a list of images.")
    return [_object(entry, "an entry of the tar's manifest.json") for entry in entries]


def _oci_entries(contents: TarContents) -> list[dict[str, Any]]:
    raw = contents.files.get("index.json")
    if raw is None:
        return []
    index = _object(parse_json(raw, "the tar's index.json"), "the tar's index.json")
    entries = index.get("manifests")
    if not isinstance(entries, list):
        raise ArtifactError("the tar's index.json lists no manifests.")
    return [_object(entry, "an entry of the tar's index.json") for entry in entries]


def _oci_name(entry: Mapping[str, Any]) -> str:
    annotations = entry.get("annotations")
    if not isinstance(annotations, dict):
        return ""
    for key in (CONTAINERD_NAME, OCI_REF_NAME):
        value = annotations.get(key)
        # A bare ref.name is a tag alone, which names no repository.
        if isinstance(value, str) and split_tag(value)[1] and "/" in value:
            return value
    return ""


def held_images(contents: TarContents, image: ImageName, *, containerd: bool, platform: str) -> list[HeldImage]:
    """Every tagged image of ``image``'s repository in the tar, in the tar's order, as the engine will load it:
    from the OCI index on the containerd store when the index names it, else from manifest.json."""
    wanted = repository_key(image.name)
    held: list[HeldImage] = []
    seen: set[str] = set()
    if containerd:
        for entry in _oci_entries(contents):
            name = _oci_name(entry)
            repository, tag = split_tag(name)
            if not tag or name in seen or repository_key(repository) != wanted:
                continue
            target = _digest_of(entry, f"the index.json entry of {name}")
            manifest = image_manifest(contents, target, platform, f"the manifest of {name}")
            if manifest is None:
                raise ArtifactError(
                    f"the tar's {name} ({target}) has no {platform} image in the tar, so this engine cannot run it."
                )
            config = config_of(manifest, f"the manifest of {name}")
            held.append(HeldImage(name, tag, config, _config(contents, config, name), target))
            seen.add(name)
    for entry in _docker_entries(contents):
        tags = entry.get("RepoTags") or []
        path = entry.get("Config")
        if not isinstance(tags, list) or not isinstance(path, str):
            raise ArtifactError("an entry of the tar's manifest.json has no Config file or a bad RepoTags list.")
        raw = contents.files.get(member_path(path))
        for name in tags:
            repository, tag = split_tag(str(name))
            if not tag or name in seen or repository_key(repository) != wanted:
                continue
            if raw is None:
                raise ArtifactError(
                    f"the tar's manifest.json names {path} as the config of {name}, but the tar lacks it."
                )
            config = sha256_digest(raw)
            document = _object(parse_json(raw, f"the config of {name}"), f"the config of {name}")
            # The classic store names a loaded image by its config digest; the containerd store, loading a
            # tar without an OCI index, by a manifest it makes itself.
            held.append(HeldImage(str(name), tag, config, document, "" if containerd else config))
            seen.add(str(name))
    return held


def pick(held: Sequence[HeldImage], tags: Sequence[str]) -> list[HeldImage]:
    """The held images in the order a consumer takes them: the planned tags first, then the rest of the tar."""
    planned = [image for tag in tags for image in held if image.tag == tag]
    return [*planned, *(image for image in held if image not in planned)]


def proven_digests(contents: TarContents, held: HeldImage, platform: str) -> list[str]:
    """The registry digests the tar proves ``held`` to be: manifests (or indexes) in it whose bytes hash to the
    digest and whose image for ``platform`` has ``held``'s config."""
    proven = []
    for digest, raw in contents.by_digest.items():
        if raw[:1] != b"{" or digest == held.config_digest:
            continue
        try:
            manifest = image_manifest(contents, digest, platform, "a manifest in the tar")
        except ArtifactError:
            continue
        if manifest is None or "layers" not in manifest:
            continue
        config = manifest.get("config")
        if isinstance(config, dict) and config.get("digest") == held.config_digest:
            proven.append(digest)
    return sorted(proven)


def why_not_pinned(contents: TarContents, held: HeldImage, pin: str, platform: str) -> str:
    """Why the tar does not prove that ``held`` is ``pin``; empty when it does."""
    raw = contents.blob(pin)
    if raw is None:
        return f"the tar carries no manifest that hashes to {pin}"
    try:
        manifest = image_manifest(contents, pin, platform, f"the manifest {pin} in the tar")
        if manifest is None:
            return f"{pin} is an index whose {platform} image manifest the tar does not carry"
        config = config_of(manifest, f"the manifest {pin} in the tar")
    except ArtifactError as exc:
        return str(exc).rstrip(".")
    if config != held.config_digest:
        return f"{pin}'s {platform} image has config {config}, not {held.config_digest}"
    return ""


def describe_held(contents: TarContents, held: HeldImage, platform: str) -> str:
    """``name (digest)``, with the registry digest it was pushed as when the tar proves one."""
    pushed = [digest for digest in proven_digests(contents, held, platform) if digest != held.identity]
    return f"{held.name} ({held.identity}" + (f", pushed as {', '.join(pushed)})" if pushed else ")")


def loaded_matches(held: HeldImage, image_id: str, facts: Mapping[str, Any]) -> bool:
    """Whether the image the engine now holds under ``held``'s name is ``held``.

    When the loaded id is known, the ids must be equal (both are content digests). Otherwise (the containerd
    store loading a tar without an OCI index) the engine's own view of the image must match the config:
    ``facts`` are the engine's os, architecture, created time, layer diff ids and container settings.
    """
    if held.loaded_id:
        return image_id == held.loaded_id
    config = held.config
    settings = _object_or_empty(config.get("config"))
    rootfs = _object_or_empty(config.get("rootfs"))
    expected = {
        "os": config.get("os") or "",
        "architecture": config.get("architecture") or "",
        "created": config.get("created") or "",
        "diff_ids": _list_or_empty(rootfs.get("diff_ids")),
        "labels": _object_or_empty(settings.get("Labels")),
        "env": _list_or_empty(settings.get("Env")),
        "cmd": _list_or_empty(settings.get("Cmd")),
        "entrypoint": _list_or_empty(settings.get("Entrypoint")),
    }
    return all(facts.get(key) == value for key, value in expected.items())
