"""The build key: one digest over everything that decides what a build makes, so that an image already built
(and tested) from the same content is found by it and promoted to another commit instead of built again.

Pure: the git object ids of the build context and of the Dockerfile are read by ``buildonce.git`` and handed
in as values. What the key cannot see (a base image tag that moved, ``RUN apt-get update``) is why scheduled
builds and ``rebuild: true`` never reuse by key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from buildonce.labels import CREATED, OCI, REVISION, Keys
from buildonce.options import Reuse
from buildonce.tags import Kind

KEY_FORMAT = "buildonce.build-key/1"
LOOKUP_PREFIX = "buildkey-"
_KEY = re.compile(r"[0-9a-f]{64}")
_LEVELS = ("index", "manifest", "manifest-descriptor", "index-descriptor")


def reuse_for(mode: Reuse, kind: Kind) -> Reuse:
    """What ``reuse: auto`` means for the event: a scheduled build exists to pick up what the key cannot see
    (a moved base tag, a package index), so it never reuses by content; every other event does."""
    if mode is not Reuse.AUTO:
        return mode
    return Reuse.COMMIT if kind is Kind.SCHEDULE else Reuse.CONTENT


@dataclass(frozen=True)
class KeyMaterial:
    """Everything the key covers, as plain values."""

    context_tree: str
    """The git tree id of the build context directory."""
    dockerfile: str
    """``context:<path>`` when the Dockerfile is inside the context (its content is in the tree), else
    ``blob:<id>``."""
    dockerignore: str
    """The blob id of a ``<Dockerfile>.dockerignore`` outside the context; empty when there is none."""
    build_args: tuple[str, ...]
    secret_ids: tuple[str, ...]
    target: str
    platforms: tuple[str, ...]
    labels: Mapping[str, str]
    annotations: tuple[str, ...]
    options: Mapping[str, str]
    """Other options that change what is made: provenance, sbom, network, the output kind."""


def commit_labels(keys: Keys) -> frozenset[str]:
    """The labels that name the commit: a promoted image gets this commit's values for them."""
    return frozenset({REVISION, f"{OCI}.version", f"{OCI}.source", keys.pr_number, keys.pr_head_sha, keys.branch})


def keyed_labels(labels: Mapping[str, str], keys: Keys) -> dict[str, str]:
    """The labels the key covers: all but those naming the commit, the run or the time, and the key's own."""
    left_out = commit_labels(keys) | {CREATED, keys.run_url, keys.build_key, keys.promoted_from}
    return {key: value for key, value in sorted(labels.items()) if key not in left_out}


def keyed_annotations(annotations: tuple[str, ...], keys: Keys) -> tuple[str, ...]:
    left_out = commit_labels(keys) | {CREATED}
    kept = []
    for entry in annotations:
        head = entry.partition("=")[0]
        level, colon, key = head.partition(":")
        name = key if colon and level.startswith(_LEVELS) else head
        if name not in left_out:
            kept.append(entry)
    return tuple(sorted(kept))


def _hashed(value: str) -> str:
    # Imported here: its OpenSSL binding takes about 2.5 ms to load, which a build without a key never needs.
    import hashlib

    return hashlib.sha256(value.encode()).hexdigest()


def build_key(material: KeyMaterial) -> str:
    """The key: 64 lowercase hex digits. Build argument values enter hashed, secrets by their id only."""
    args = []
    for entry in material.build_args:
        name, _, value = entry.partition("=")
        args.append([name, _hashed(value)])
    document = {
        "format": KEY_FORMAT,
        "context": material.context_tree,
        "dockerfile": material.dockerfile,
        "dockerignore": material.dockerignore,
        # The last value of a repeated argument is the one buildx uses; the order of different names is not.
        "build-args": sorted({name: [name, value] for name, value in args}.values()),
        "secrets": sorted(set(material.secret_ids)),
        "target": material.target,
        "platforms": sorted(set(material.platforms)),
        "labels": dict(sorted(material.labels.items())),
        "annotations": sorted(material.annotations),
        "options": dict(sorted(material.options.items())),
    }
    return _hashed(json.dumps(document, sort_keys=True, separators=(",", ":")))


def lookup_tag(key: str) -> str:
    """The tag that finds an image by its key in a repository, in one request."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a build key: {key!r}")
    return LOOKUP_PREFIX + key


def key_of_tag(tag: str) -> str | None:
    """The key a lookup tag names; None for any other tag."""
    if tag.startswith(LOOKUP_PREFIX) and _KEY.fullmatch(tag[len(LOOKUP_PREFIX) :]):
        return tag[len(LOOKUP_PREFIX) :]
    return None


def promoted_labels(
    tested: Mapping[str, str], planned: Mapping[str, str], keys: Keys, promoted_from: str
) -> dict[str, str]:
    """The tested image's labels, with this commit's values for those naming the commit (dropped where this
    commit has none, as a push has no pull request) and ``promoted-from``; everything else as it was, in the
    same order, so that two promotions of one image to one commit make the very same config."""
    naming = commit_labels(keys)
    labels = {
        key: planned[key] if key in naming else value
        for key, value in tested.items()
        if key not in naming or key in planned
    }
    for key in sorted(naming):
        if key in planned:
            labels[key] = planned[key]
    labels[keys.promoted_from] = promoted_from
    return labels


def promoted_annotations(tested: Mapping[str, str], planned: Mapping[str, str], keys: Keys) -> dict[str, str]:
    """A manifest's or index's annotations with this commit's values for the OCI keys that name the commit."""
    naming = commit_labels(keys)
    annotations = {}
    for key, value in tested.items():
        if key in naming:
            if key in planned:
                annotations[key] = planned[key]
            continue
        annotations[key] = value
    return annotations
