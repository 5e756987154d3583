"""Image labels and manifest annotations: the OCI set, ours under a namespace, and the user's."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from buildonce.errors import InputError, VerificationError
from buildonce.github.workflow import check_text
from buildonce.tags import Kind, Subject

if TYPE_CHECKING:
    from buildonce.github.context import Context

OCI = "org.opencontainers.image"
REVISION = f"{OCI}.revision"
CREATED = f"{OCI}.created"
DEFAULT_NAMESPACE = "dev.buildonce"
ANNOTATION_LEVEL = "manifest"

_NAMESPACE = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")
_ANNOTATION_LEVELS = ("index", "manifest", "manifest-descriptor", "index-descriptor")


class Keys:
    """Our label keys under a namespace; build writes them and consume reads them."""

    def __init__(self, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.pr_number = f"{namespace}.pr.number"
        self.pr_head_sha = f"{namespace}.pr.head-sha"
        self.branch = f"{namespace}.branch"
        self.run_url = f"{namespace}.run-url"
        self.build_key = f"{namespace}.build-key"
        self.promoted_from = f"{namespace}.promoted-from"


def image_commit(labels: Mapping[str, str], keys: Keys, *, pr_head: bool = True) -> str:
    """The commit an image names as the one it was built from: with ``pr_head``, a pull request's head commit
    (its pr.head-sha label) where it has one, else its revision label; empty when it names none.

    This is the one freshness rule: the build reads it to tell its own commit's image from another's under an
    immutable tag, consume and verify to tell a fresh image from a stale one.
    """
    if pr_head:
        return labels.get(keys.pr_head_sha) or labels.get(REVISION, "")
    return labels.get(REVISION, "")


def check_fresh(reference: str, labels: Mapping[str, str], sha: str, keys: Keys) -> str:
    """Fail unless the image's labels say it was built from ``sha`` (as its revision or as a pull request's
    head); return ``sha``."""
    if sha in (image_commit(labels, keys, pr_head=False), image_commit(labels, keys)):
        return sha
    named = image_commit(labels, keys)
    if not named:
        raise VerificationError(
            f"{reference} carries no {REVISION} label, so it cannot be shown to be built from {sha}. "
            "Build it with buildonce (or add the label), or set check-freshness: false."
        )
    raise VerificationError(
        f"{reference} was built from commit {named}, but this job tests {sha}: the tag is stale or was "
        "pushed again by another run. Re-run the build for this commit, or check which run pushed it."
    )


def check_namespace(namespace: str) -> str:
    if not _NAMESPACE.fullmatch(namespace):
        raise InputError(
            f"input 'label-namespace': {namespace!r} is not a reverse-DNS prefix such as "
            f"{DEFAULT_NAMESPACE} or com.example.ci (lower-case letters, digits, '.' and '-')."
        )
    return namespace


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def computed_labels(
    context: Context, subject: Subject, *, version: str, created: datetime, namespace: str
) -> dict[str, str]:
    """The labels buildonce derives from the context, before anything the user gives."""
    repo = context.repository
    labels = {
        f"{OCI}.title": repo.name,
        f"{OCI}.description": repo.description,
        f"{OCI}.url": repo.html_url,
        f"{OCI}.source": repo.html_url,
        f"{OCI}.version": version,
        CREATED: rfc3339(created),
        REVISION: subject.revision or subject.sha,
        f"{OCI}.licenses": repo.license,
    }
    keys = Keys(namespace)
    if subject.pr_number is not None:
        labels[keys.pr_number] = str(subject.pr_number)
        labels[keys.pr_head_sha] = subject.pr_head_sha
    if subject.ref_name and subject.kind is not Kind.TAG:  # a git tag's name is in the version label
        labels[keys.branch] = subject.ref_name
    labels[keys.run_url] = context.run_url
    return {key: value for key, value in labels.items() if value}


def check_label(key: str, value: str, *, source: str) -> tuple[str, str]:
    """One label, whichever input it comes from: a key without spaces or '=' (``--label key=value`` and the
    ``labels`` output split at the first '='), and key and value on one line of printable text."""
    check_text(key, f"input '{source}': a label key")
    check_text(value, f"input '{source}': the value of label {key!r}")
    if not key or "=" in key or any(ch.isspace() for ch in key):
        raise InputError(
            f"input '{source}': {key!r} is not a label key; a key has no spaces and no '=', "
            "e.g. org.opencontainers.image.vendor."
        )
    return key, value


def parse_labels(entries: Iterable[str], *, source: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise InputError(
                f"input '{source}': {entry!r} is not a label. Write one key=value per line, "
                "e.g. org.opencontainers.image.vendor=Acme."
            )
        key, value = check_label(key.strip(), value, source=source)
        labels[key] = value
    return labels


def check_annotation(entry: str, *, source: str) -> str:
    """One ``[level:]key=value`` annotation, on one line of printable text."""
    check_text(entry, f"input '{source}': an annotation")
    head, sep, _ = entry.partition("=")
    key = head.partition(":")[2] if head.startswith(_ANNOTATION_LEVELS) and ":" in head else head
    if not sep or not key.strip() or any(ch.isspace() for ch in key):
        raise InputError(
            f"input '{source}': {entry!r} is not an annotation. Write one [level:]key=value per line, "
            "e.g. manifest:org.opencontainers.image.vendor=Acme."
        )
    return entry


def merge_labels(*layers: Mapping[str, str]) -> dict[str, str]:
    """Later layers win by key; the result is sorted by key so every run prints the same order.

    Every layer is already one line of text per key and value (the inputs are checked as they are read,
    the payload's fields as the context is), so the ``labels`` output holds exactly one label per line.
    """
    merged: dict[str, str] = {}
    for layer in layers:
        merged.update(layer)
    return dict(sorted(merged.items()))


def annotations_for(labels: Mapping[str, str], extra: Iterable[str] = ()) -> list[str]:
    """OCI labels repeated as manifest annotations (``manifest:key=value``), plus given annotations.

    Given annotations (e.g. from metadata-action) keep their level; ours win where both name the same
    level and key, since they come from the final labels the user already had the last word on.
    """
    merged: dict[tuple[str, str], str] = {}
    for entry in extra:
        head, sep, value = entry.partition("=")
        if not sep:
            raise InputError(f"annotation {entry!r} is not of the form [level:]key=value.")
        level, colon, key = head.partition(":")
        if not colon or not level.startswith(_ANNOTATION_LEVELS):
            level, key = ANNOTATION_LEVEL, head
        merged[(level, key)] = value
    for key, value in labels.items():
        if key.startswith(f"{OCI}."):
            merged[(ANNOTATION_LEVEL, key)] = value
    return [f"{level}:{key}={value}" for (level, key), value in sorted(merged.items())]
