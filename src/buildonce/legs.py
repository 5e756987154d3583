"""Per-platform legs and their merge, pure: the matrix, a leg's descriptor, and the plan of the index.

A leg builds one platform on its own runner and pushes that platform's manifests by digest, never a tag and
never an index of its own; it hands on one JSON object that names them. The merge takes exactly the planned
platforms' legs, all of one commit, and lists them in one index whose bytes depend only on the legs, so that
a re-run of the merge makes the same digest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from buildonce.errors import InputError
from buildonce.oci import INDEX_MEDIA_TYPES, is_attestation
from buildonce.platforms import check_platform, matches

LEG_FORMAT = 1
"""The version of a leg's JSON object; a merge refuses any other."""

ARTIFACT_PREFIX = "buildonce-leg"
_DESCRIPTOR_KEYS = ("mediaType", "digest", "size", "platform", "annotations")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_RUNNER = re.compile(r"[A-Za-z0-9_.-]+(?:,[A-Za-z0-9_.-]+)*|[A-Za-z0-9_. -]+")


def platform_pair(platform: str) -> str:
    """A tag- and artifact-safe name of a platform: ``linux/arm/v7`` is ``linux-arm-v7``."""
    return platform.replace("/", "-")


def artifact_name(immutable_tag: str, platform: str) -> str:
    """The leg's artifact: named after the commit's immutable tag and the platform, so that a re-run of one leg
    replaces its own artifact and nothing else."""
    return f"{ARTIFACT_PREFIX}-{immutable_tag}-{platform_pair(platform)}"


# --- the matrix ---------------------------------------------------------------------------------------------


def parse_runners(entries: Iterable[str], platforms: Sequence[str]) -> dict[str, str]:
    """``platform=runner`` entries (input 'runners'), each naming a planned platform once."""
    runners: dict[str, str] = {}
    for entry in entries:
        platform, sep, runner = entry.partition("=")
        platform, runner = platform.strip(), runner.strip()
        if not sep or not platform or not runner:
            raise InputError(
                f"input 'runners': {entry!r} is not of the form platform=runner, "
                "e.g. linux/amd64=ubuntu-24.04,linux/arm64=ubuntu-24.04-arm."
            )
        check_platform(platform, source="runners")
        if platform not in platforms:
            raise InputError(
                f"input 'runners' names {platform}, which is not among the planned platforms "
                f"({', '.join(platforms) or 'none'}). Add it to 'platforms' or remove it from 'runners'."
            )
        if platform in runners:
            raise InputError(f"input 'runners' names {platform} twice; give each platform one runner.")
        if not _RUNNER.fullmatch(runner):
            raise InputError(f"input 'runners': the runner of {platform}, {runner!r}, is not a runner label.")
        runners[platform] = runner
    return runners


def matrix(platforms: Sequence[str], runners: Mapping[str, str]) -> list[dict[str, str]]:
    """``strategy.matrix.include``: one entry per planned platform, sorted, with its runner (empty when the
    'runners' input names none for it)."""
    return [
        {"platform": platform, "pair": platform_pair(platform), "runner": runners.get(platform, "")}
        for platform in sorted(platforms)
    ]


# --- a leg --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leg:
    """What one leg pushed: its platform's image manifest and the attestation manifests of that image."""

    platform: str
    commit: str
    immutable_tag: str
    manifest: dict[str, Any]
    attestations: tuple[dict[str, Any], ...] = ()
    images: tuple[str, ...] = field(default=())
    """The repositories it pushed to."""

    @property
    def digest(self) -> str:
        return str(self.manifest["digest"])

    def to_json(self) -> str:
        """One line of JSON, keys sorted: what the 'leg' output and the leg's artifact hold."""
        body = {
            "buildonce-leg": LEG_FORMAT,
            "platform": self.platform,
            "commit": self.commit,
            "immutable-tag": self.immutable_tag,
            "images": list(self.images),
            "manifest": self.manifest,
            "attestations": list(self.attestations),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _descriptor(data: object, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InputError(f"input 'legs': {what} is not a descriptor object.")
    digest, size, media_type = data.get("digest"), data.get("size"), data.get("mediaType")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InputError(f"input 'legs': {what} has no sha256 digest.")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise InputError(f"input 'legs': {what} ({digest}) has no size.")
    if not isinstance(media_type, str) or not media_type or media_type in INDEX_MEDIA_TYPES:
        raise InputError(f"input 'legs': {what} ({digest}) is not an image manifest; a leg never pushes an index.")
    for key in ("platform", "annotations"):
        value = data.get(key)
        if value is not None and not (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())):
            raise InputError(f"input 'legs': {what} ({digest}) has a malformed {key!r}.")
    return {key: data[key] for key in _DESCRIPTOR_KEYS if data.get(key) is not None}


def platform_of(descriptor: Mapping[str, Any]) -> str:
    plat = descriptor.get("platform") or {}
    return "/".join(str(part) for part in (plat.get("os"), plat.get("architecture"), plat.get("variant")) if part)


def parse_leg(text: str, number: int) -> Leg:
    """One line of input 'legs', checked: every later decision reads only what passed here."""
    what = f"leg {number}"
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise InputError(
            f"input 'legs': line {number} is not JSON. Give each leg's 'leg' output (or its artifact's file) "
            "as one line."
        ) from None
    if not isinstance(data, dict) or data.get("buildonce-leg") != LEG_FORMAT:
        raise InputError(
            f"input 'legs': line {number} is not a buildonce leg (format {LEG_FORMAT}); give each leg's 'leg' "
            "output as it is."
        )
    platform, commit, tag = data.get("platform"), data.get("commit"), data.get("immutable-tag")
    if not isinstance(platform, str) or not isinstance(commit, str) or not isinstance(tag, str):
        raise InputError(f"input 'legs': {what} lacks its platform, commit or immutable tag.")
    check_platform(platform, source="legs")
    manifest = _descriptor(data.get("manifest"), f"{what} ({platform})")
    named = platform_of(manifest)
    if not named or not matches(platform, *_platform_parts(manifest)):
        raise InputError(
            f"input 'legs': {what} is for {platform}, but its manifest's descriptor names {named or 'none'}."
        )
    raw_attestations = data.get("attestations") or []
    if not isinstance(raw_attestations, list):
        raise InputError(f"input 'legs': {what} ({platform}) has a malformed 'attestations' list.")
    attestations = tuple(_descriptor(item, f"an attestation of {what} ({platform})") for item in raw_attestations)
    for attestation in attestations:
        subject = (attestation.get("annotations") or {}).get("vnd.docker.reference.digest")
        if not is_attestation(attestation) or subject != manifest["digest"]:
            raise InputError(
                f"input 'legs': {what} ({platform}) lists {attestation['digest']} as an attestation, but it is not "
                f"one of {manifest['digest']}."
            )
    images = data.get("images") or []
    if not isinstance(images, list) or not all(isinstance(image, str) for image in images):
        raise InputError(f"input 'legs': {what} ({platform}) has a malformed 'images' list.")
    return Leg(platform, commit, tag, manifest, attestations, tuple(images))


def _platform_parts(descriptor: Mapping[str, Any]) -> tuple[object, object, object]:
    plat = descriptor.get("platform") or {}
    return plat.get("os"), plat.get("architecture"), plat.get("variant")


def parse_legs(lines: Iterable[str]) -> list[Leg]:
    legs = [parse_leg(line, number) for number, line in enumerate(lines, 1)]
    if not legs:
        raise InputError(
            "input 'legs' is empty. Give the 'leg' output of every leg, one JSON object per line "
            "(merge/action.yml downloads this run's leg artifacts itself)."
        )
    return legs


def leg_of_index(
    index: Mapping[str, Any], platform: str, *, commit: str, immutable_tag: str, images: Sequence[str]
) -> Leg | None:
    """The leg an index (a layout's top one, or a merged image's) holds for ``platform``: its image manifest
    and that manifest's attestations; None when it has no image of that platform."""
    entries = [entry for entry in index.get("manifests") or [] if isinstance(entry, dict)]
    images_of = [entry for entry in entries if not is_attestation(entry) and matches(platform, *_platform_parts(entry))]
    if len(images_of) != 1:
        return None
    manifest = {key: images_of[0][key] for key in _DESCRIPTOR_KEYS if images_of[0].get(key) is not None}
    attestations = tuple(
        {key: entry[key] for key in _DESCRIPTOR_KEYS if entry.get(key) is not None}
        for entry in entries
        if is_attestation(entry)
        and (entry.get("annotations") or {}).get("vnd.docker.reference.digest") == manifest["digest"]
    )
    return Leg(platform, commit, immutable_tag, manifest, attestations, tuple(images))


# --- the merge ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MergePlan:
    legs: tuple[Leg, ...]
    """Sorted by platform."""

    def entries(self) -> list[dict[str, Any]]:
        """The index's descriptors: each platform's image, sorted by platform, each followed by its own
        attestations (sorted by digest)."""
        found: list[dict[str, Any]] = []
        for leg in self.legs:
            found.append(dict(leg.manifest))
            found += [dict(item) for item in sorted(leg.attestations, key=lambda item: str(item["digest"]))]
        return found

    def platform_digests(self) -> dict[str, str]:
        return {leg.platform: leg.digest for leg in self.legs}


def plan_merge(legs: Sequence[Leg], platforms: Sequence[str], commit: str, immutable_tag: str) -> MergePlan:
    """Check that the legs are exactly the planned platforms, once each, all of this commit."""
    if not platforms:
        raise InputError(
            "input 'platforms' is empty. Give the platforms the legs were planned from, e.g. "
            "platforms: linux/amd64,linux/arm64 (the same value the legs' matrix came from)."
        )
    for leg in legs:
        if leg.commit != commit:
            raise InputError(
                f"input 'legs': the leg for {leg.platform} was built from {leg.commit}, not from {commit}, the "
                "commit this merge is for. Merge only this run's legs; re-run the leg that is of another commit."
            )
        if leg.immutable_tag != immutable_tag:
            raise InputError(
                f"input 'legs': the leg for {leg.platform} was planned with the immutable tag {leg.immutable_tag}, "
                f"this merge with {immutable_tag}. Give the merge the same tag inputs as the legs."
            )
    by_platform: dict[str, list[Leg]] = {}
    for leg in legs:
        by_platform.setdefault(_planned_name(leg.platform, platforms), []).append(leg)
    twice = sorted(platform for platform, found in by_platform.items() if len(found) > 1)
    missing = sorted(set(platforms) - set(by_platform))
    extra = sorted(set(by_platform) - set(platforms))
    problems = []
    if missing:
        problems.append(f"no leg for {', '.join(missing)}")
    if extra:
        problems.append(f"legs for {', '.join(extra)}, which is not planned")
    if twice:
        problems.append(f"more than one leg for {', '.join(twice)}")
    if problems:
        raise InputError(
            f"input 'legs' must hold exactly one leg per planned platform ({', '.join(sorted(platforms))}), but "
            f"there is {'; '.join(problems)}. Wait for every leg to finish (needs: the matrix job) and give the "
            "merge the same 'platforms' the legs were planned from. Nothing was tagged."
        )
    return MergePlan(tuple(by_platform[platform][0] for platform in sorted(by_platform)))


def _planned_name(platform: str, platforms: Sequence[str]) -> str:
    """The planned platform a leg serves: the same name, or ``linux/arm64`` for a leg of ``linux/arm64/v8``."""
    if platform in platforms:
        return platform
    for planned in platforms:
        parts = platform.split("/")
        if matches(planned, parts[0], parts[1], parts[2] if len(parts) > 2 else None):
            return planned
    return platform


def index_annotations(labels: Mapping[str, str], annotations: Iterable[str]) -> dict[str, str]:
    """The index's own annotations: the OCI labels, then the given ``index:`` annotations (which win)."""
    found = {key: value for key, value in sorted(labels.items()) if key.startswith("org.opencontainers.image.")}
    for entry in annotations:
        head, _, value = entry.partition("=")
        level, colon, key = head.partition(":")
        if colon and level == "index":
            found[key] = value
    return found


def config_platform(config: Mapping[str, Any]) -> str:
    """``os/arch[/variant]`` as an image config names it."""
    return "/".join(str(config[key]) for key in ("os", "architecture", "variant") if config.get(key))
