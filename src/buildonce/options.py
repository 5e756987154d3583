"""Typed options parsed from the raw inputs, one dataclass per subcommand.

Every input a subcommand knows is listed here with its default, the same string action.yml gives it;
a test holds action.yml and this table to the same names and defaults. Parsing checks every value and
names the input in its error, so nothing runs on half-valid settings.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from buildonce.compression import Compression
from buildonce.docker.config import Login
from buildonce.docker.spec import Secret
from buildonce.errors import InputError
from buildonce.github.workflow import Inputs
from buildonce.labels import DEFAULT_NAMESPACE, check_annotation, check_label, check_namespace, parse_labels
from buildonce.platforms import check_platform
from buildonce.references import (
    DIGEST_PATTERN,
    ImageName,
    Reference,
    check_tag,
    looks_like_reference,
    parse_image_name,
    parse_reference,
)
from buildonce.signing import (
    SIGN_INPUTS,
    VERIFY_SIGNATURE_INPUTS,
    SignatureCheck,
    SignOptions,
    sign_options,
    signature_check,
)
from buildonce.tags import PrSha, TagPolicy

PLAN_INPUTS: dict[str, str] = {
    "images": "",
    "tags": "",
    "labels": "",
    "annotations": "",
    "label-namespace": DEFAULT_NAMESPACE,
    "metadata-json": "",
    "tag-prefix": "",
    "tag-suffix": "",
    "sha-length": "7",
    "pr-sha": "head",
    "default-branch": "",
    "platforms": "",
    "push": "auto",
    "load": "auto",
    "artifact": "auto",
    "artifact-name": "",
}
RETRY_INPUTS: dict[str, str] = {
    "retry-attempts": "3",
    "retry-wait-seconds": "10",
    "timeout-minutes": "25",
}
LOGIN_INPUTS: dict[str, str] = {
    "registry": "",
    "username": "",
    "password": "",
}
BUILD_INPUTS: dict[str, str] = {
    **PLAN_INPUTS,
    "context": ".",
    "file": "",
    "build-args": "",
    "target": "",
    "cache-from": "",
    "cache-to": "",
    "builder": "",
    "provenance": "",
    "sbom": "",
    "secrets": "",
    "secret-files": "",
    "secret-envs": "",
    "no-cache": "false",
    "pull": "false",
    "network": "",
    **RETRY_INPUTS,
    **LOGIN_INPUTS,
    "allow-overwrite": "false",
    "rebuild": "false",
    "reuse": "auto",
    "push-via": "auto",
    "artifact-dir": "",
    "artifact-compression": "none",
    "distribute": "none",
    **SIGN_INPUTS,
}
PLAN_COMMAND_INPUTS: dict[str, str] = {
    **PLAN_INPUTS,
    "runners": "",
}
MERGE_INPUTS: dict[str, str] = {
    **PLAN_INPUTS,
    "legs": "",
    **RETRY_INPUTS,
    **LOGIN_INPUTS,
    "allow-overwrite": "false",
    **SIGN_INPUTS,
}
CONSUME_INPUTS: dict[str, str] = {
    "image": "",
    "digest": "",
    "tag": "",
    "pr-number": "",
    "sha": "",
    "sha-length": "7",
    "pr-sha": "head",
    "tag-prefix": "",
    "tag-suffix": "",
    "default-branch": "",
    "label-namespace": DEFAULT_NAMESPACE,
    "artifact-path": "",
    "source": "auto",
    "defer-artifact": "false",
    "check-freshness": "true",
    "platform": "",
    **RETRY_INPUTS,
    **LOGIN_INPUTS,
    **VERIFY_SIGNATURE_INPUTS,
}
VERIFY_INPUTS: dict[str, str] = {
    "image": "",
    "sha": "",
    "label-namespace": DEFAULT_NAMESPACE,
    **RETRY_INPUTS,
    **LOGIN_INPUTS,
    **VERIFY_SIGNATURE_INPUTS,
}

_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})
_SHA = re.compile(r"[0-9a-f]{40}")
# ASCII only: int() and float() also read '²', '٣' or '1_0', and a long enough string of digits makes
# int() itself fail.
_WHOLE = re.compile(r"[0-9]{1,9}")
_NUMBER = re.compile(r"[0-9]{1,9}(?:\.[0-9]{0,9})?|\.[0-9]{1,9}")


class Reuse(enum.Enum):
    """The reuse input: what a build may use in place of building (the build key's lookup is buildkey.py's)."""

    AUTO = "auto"
    CONTENT = "content"
    """Reuse this commit's image, else promote an image built from the same content (the build key)."""
    COMMIT = "commit"
    """Reuse only this commit's image, under its immutable tags."""
    OFF = "off"
    """Always build, as ``rebuild: true``."""


class Switch(enum.Enum):
    AUTO = "auto"
    TRUE = "true"
    FALSE = "false"

    def decide(self, auto: bool) -> bool:
        return auto if self is Switch.AUTO else self is Switch.TRUE


class PushVia(enum.Enum):
    AUTO = "auto"
    ENGINE = "engine"
    LAYOUT = "layout"


class Distribute(enum.Enum):
    NONE = "none"
    """One build of every platform, published under the tags (the default)."""
    LEG = "leg"
    """One platform of several, pushed by digest alone, for ``buildonce merge`` to publish."""


class Source(enum.Enum):
    AUTO = "auto"
    """The registry, then the artifact (when one is given) if the registry cannot serve the image."""
    REGISTRY = "registry"
    ARTIFACT = "artifact"


E = TypeVar("E", bound=enum.Enum)


def _value(inputs: Inputs, defaults: dict[str, str], name: str) -> str:
    return inputs.get(name, defaults[name])


def _choice(inputs: Inputs, defaults: dict[str, str], name: str, kind: type[E]) -> E:
    value = _value(inputs, defaults, name)
    for member in kind:
        if member.value == value.lower():
            return member
    allowed = ", ".join(str(member.value) for member in kind)
    raise InputError(f"input '{name}' is {value!r}; it must be one of: {allowed}.")


def _bool(inputs: Inputs, defaults: dict[str, str], name: str) -> bool:
    value = _value(inputs, defaults, name)
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InputError(f"input '{name}' is {value!r}; it must be true or false.")


def _int(inputs: Inputs, defaults: dict[str, str], name: str, low: int, high: int) -> int:
    value = _value(inputs, defaults, name)
    if not _WHOLE.fullmatch(value):
        raise InputError(f"input '{name}' is {value!r}; it must be a whole number from {low} to {high}.")
    number = int(value)
    if not low <= number <= high:
        raise InputError(f"input '{name}' is {number}; it must be from {low} to {high}.")
    return number


def _float(inputs: Inputs, defaults: dict[str, str], name: str, low: float, high: float) -> float:
    value = _value(inputs, defaults, name)
    if not _NUMBER.fullmatch(value):
        raise InputError(f"input '{name}' is {value!r}; it must be a number from {low:g} to {high:g}.")
    number = float(value)
    if not low <= number <= high:
        raise InputError(f"input '{name}' is {value}; it must be from {low:g} to {high:g}.")
    return number


def _sha(inputs: Inputs, name: str) -> str:
    value = inputs.get(name).lower()
    if value and not _SHA.fullmatch(value):
        raise InputError(f"input '{name}' is {value!r}; give the full 40-character commit sha.")
    return value


def _affix(inputs: Inputs, name: str, pattern: str) -> str:
    value = inputs.get(name)
    if value and not re.fullmatch(pattern, value):
        raise InputError(
            f"input '{name}' is {value!r}; it may hold only letters, digits, '_', '.' and '-'"
            + (" and must not start with '.' or '-'." if name == "tag-prefix" else ".")
        )
    return value


def tag_policy(inputs: Inputs, defaults: dict[str, str]) -> TagPolicy:
    return TagPolicy(
        sha_length=_int(inputs, defaults, "sha-length", 7, 40),
        prefix=_affix(inputs, "tag-prefix", r"[A-Za-z0-9_][A-Za-z0-9._-]*"),
        suffix=_affix(inputs, "tag-suffix", r"[A-Za-z0-9._-]*"),
    )


@dataclass(frozen=True)
class MetadataJson:
    """docker/metadata-action's ``json`` output."""

    tags: tuple[Reference, ...] = ()
    labels: dict[str, str] | None = None
    annotations: tuple[str, ...] = ()


def parse_metadata_json(text: str) -> MetadataJson:
    if not text.strip():
        return MetadataJson()
    hint = "Pass docker/metadata-action's json output as it is: metadata-json: ${{ steps.meta.outputs.json }}."
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"input 'metadata-json' is not valid JSON ({exc.msg} at position {exc.pos}). {hint}") from None
    except (ValueError, RecursionError) as exc:  # a number too long to convert, or nesting too deep
        reason = "nests too deeply" if isinstance(exc, RecursionError) else "holds a number too long to read"
        raise InputError(f"input 'metadata-json' {reason}. {hint}") from None
    if not isinstance(data, dict):
        raise InputError(f"input 'metadata-json' is a JSON {type(data).__name__}, not an object. {hint}")
    tags, labels, annotations = data.get("tags", []), data.get("labels", {}), data.get("annotations", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise InputError(f"input 'metadata-json': 'tags' must be a list of strings. {hint}")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise InputError(f"input 'metadata-json': 'labels' must be an object of strings. {hint}")
    if not isinstance(annotations, list) or not all(isinstance(a, str) for a in annotations):
        raise InputError(f"input 'metadata-json': 'annotations' must be a list of strings. {hint}")
    return MetadataJson(
        tags=tuple(parse_reference(tag, source="metadata-json") for tag in tags if tag.strip()),
        labels=dict(check_label(key, value, source="metadata-json") for key, value in labels.items()),
        annotations=tuple(check_annotation(entry, source="metadata-json") for entry in annotations),
    )


@dataclass(frozen=True)
class PlanOptions:
    images: tuple[ImageName, ...]
    extra_tags: tuple[str, ...]
    extra_references: tuple[Reference, ...]
    labels: dict[str, str]
    annotations: tuple[str, ...]
    label_namespace: str
    metadata: MetadataJson
    policy: TagPolicy
    pr_sha: PrSha
    default_branch: str
    platforms: tuple[str, ...]
    push: Switch
    load: Switch
    artifact: Switch
    artifact_name: str


def plan_options(inputs: Inputs, defaults: dict[str, str] = PLAN_INPUTS) -> PlanOptions:
    # JSON may span lines; what it holds is checked once decoded.
    metadata = parse_metadata_json(inputs.raw("metadata-json") or "")
    images = [parse_image_name(item, source="images") for item in inputs.items("images")]
    if not images:
        # After metadata-action, its references already name the images.
        images = [ref.image for ref in metadata.tags]
    if not images:
        raise InputError(
            "input 'images' is empty. Name at least one image, e.g. images: ghcr.io/acme/app "
            "(or pass docker/metadata-action's json output as metadata-json)."
        )
    extra_tags: list[str] = []
    extra_refs: list[Reference] = []
    for entry in inputs.items("tags"):
        if looks_like_reference(entry):
            extra_refs.append(parse_reference(entry, source="tags"))
        else:
            extra_tags.append(check_tag(entry, source="tags"))
    artifact_name = inputs.get("artifact-name")
    if artifact_name and re.search(r'[":<>|*?\\/\r\n]', artifact_name):
        raise InputError(
            f"input 'artifact-name' is {artifact_name!r}; an artifact name cannot hold any of "
            '" : < > | * ? \\ / or a line break.'
        )
    return PlanOptions(
        images=tuple(dict.fromkeys(images)),
        extra_tags=tuple(dict.fromkeys(extra_tags)),
        extra_references=tuple(dict.fromkeys(extra_refs)),
        labels=parse_labels(inputs.lines("labels"), source="labels"),
        annotations=tuple(check_annotation(entry, source="annotations") for entry in inputs.lines("annotations")),
        label_namespace=check_namespace(_value(inputs, defaults, "label-namespace")),
        metadata=metadata,
        policy=tag_policy(inputs, defaults),
        pr_sha=_choice(inputs, defaults, "pr-sha", PrSha),
        default_branch=inputs.get("default-branch"),
        platforms=tuple(dict.fromkeys(check_platform(item) for item in inputs.items("platforms"))),
        push=_choice(inputs, defaults, "push", Switch),
        load=_choice(inputs, defaults, "load", Switch),
        artifact=_choice(inputs, defaults, "artifact", Switch),
        artifact_name=artifact_name,
    )


@dataclass(frozen=True)
class RetryOptions:
    attempts: int
    wait_seconds: float
    timeout_seconds: float


def retry_options(inputs: Inputs, defaults: dict[str, str]) -> RetryOptions:
    return RetryOptions(
        attempts=_int(inputs, defaults, "retry-attempts", 1, 20),
        wait_seconds=_float(inputs, defaults, "retry-wait-seconds", 0, 600),
        timeout_seconds=_float(inputs, defaults, "timeout-minutes", 0.05, 360) * 60,
    )


def login_options(inputs: Inputs) -> Login | None:
    registry, username = inputs.get("registry"), inputs.get("username")
    # Passwords are taken as given: a trailing space may be part of one.
    password = (inputs.raw("password") or "").strip("\r\n")
    if not (username or password):
        return None
    if not (username and password):
        missing = "password" if username else "username"
        raise InputError(
            f"input '{missing}' is empty while '{'username' if username else 'password'}' is set; "
            "give both to log in, or neither to use the credentials already in the Docker config."
        )
    return Login(registry=registry or "docker.io", username=username, password=password)


def _secrets(inputs: Inputs) -> tuple[Secret, ...]:
    secrets: list[Secret] = []
    for name in ("secrets", "secret-files", "secret-envs"):
        for entry in inputs.lines(name):
            key, sep, value = entry.partition("=")
            key = key.strip()
            if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", key):
                raise InputError(
                    f"input '{name}': an entry is not of the form id=value (the value is not shown). "
                    "Write one id=value per line; the id may hold letters, digits, '_', '.' and '-'."
                )
            if name == "secrets":
                secrets.append(Secret(id=key, value=value))
            elif name == "secret-files":
                secrets.append(Secret(id=key, src=value.strip()))
            else:
                secrets.append(Secret(id=key, env=value.strip()))
    return tuple(secrets)


def _epoch(text: str) -> int | None:
    from buildonce.github.context import parse_epoch  # a build's: the event's reader, with its datetime

    return parse_epoch(text)


def _build_args(inputs: Inputs) -> tuple[str, ...]:
    args = []
    for entry in inputs.lines("build-args"):
        key, sep, _ = entry.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise InputError(
                f"input 'build-args': {entry!r} is not a build argument. Write one NAME=value per line; "
                "NAME is letters, digits and '_', not starting with a digit."
            )
        if key == "SOURCE_DATE_EPOCH" and _epoch(entry[len(key) + 1 :].strip()) is None:
            from buildonce.github.context import MAX_EPOCH

            raise InputError(
                f"input 'build-args': {entry!r} gives SOURCE_DATE_EPOCH no time; it must be a whole number of "
                f"seconds since 1970-01-01 UTC, at most {MAX_EPOCH} (or leave it out: buildonce sets it from "
                "the commit's time)."
            )
        args.append(entry)
    return tuple(args)


@dataclass(frozen=True)
class BuildOptions:
    plan: PlanOptions
    context: str
    file: str
    build_args: tuple[str, ...]
    target: str
    cache_from: tuple[str, ...]
    cache_to: tuple[str, ...]
    builder: str
    provenance: str
    sbom: str
    secrets: tuple[Secret, ...]
    no_cache: bool
    pull: bool
    network: str
    retry: RetryOptions
    login: Login | None
    allow_overwrite: bool
    rebuild: bool
    push_via: PushVia
    artifact_dir: str
    compression: Compression
    distribute: Distribute = Distribute.NONE
    reuse: Reuse = Reuse.AUTO
    sign: SignOptions = field(default_factory=SignOptions)

    @property
    def source_date_epoch(self) -> int | None:
        """A SOURCE_DATE_EPOCH given as a build argument, which then dates the image."""
        for entry in self.build_args:
            key, _, value = entry.partition("=")
            if key == "SOURCE_DATE_EPOCH":
                return _epoch(value.strip())
        return None


def build_options(inputs: Inputs) -> BuildOptions:
    defaults = BUILD_INPUTS
    return BuildOptions(
        plan=plan_options(inputs, defaults),
        context=_value(inputs, defaults, "context"),
        file=inputs.get("file"),
        build_args=_build_args(inputs),
        target=inputs.get("target"),
        cache_from=tuple(inputs.lines("cache-from")),
        cache_to=tuple(inputs.lines("cache-to")),
        builder=inputs.get("builder"),
        provenance=inputs.get("provenance"),
        sbom=inputs.get("sbom"),
        secrets=_secrets(inputs),
        no_cache=_bool(inputs, defaults, "no-cache"),
        pull=_bool(inputs, defaults, "pull"),
        network=inputs.get("network"),
        retry=retry_options(inputs, defaults),
        login=login_options(inputs),
        allow_overwrite=_bool(inputs, defaults, "allow-overwrite"),
        rebuild=_bool(inputs, defaults, "rebuild"),
        push_via=_choice(inputs, defaults, "push-via", PushVia),
        artifact_dir=inputs.get("artifact-dir"),
        compression=_choice(inputs, defaults, "artifact-compression", Compression),
        distribute=_choice(inputs, defaults, "distribute", Distribute),
        reuse=_choice(inputs, defaults, "reuse", Reuse),
        sign=sign_options(inputs),
    )


@dataclass(frozen=True)
class MergeOptions:
    plan: PlanOptions
    legs: tuple[str, ...]
    """One leg's JSON object per line, as given."""
    retry: RetryOptions
    login: Login | None
    allow_overwrite: bool
    sign: SignOptions = field(default_factory=SignOptions)


def merge_options(inputs: Inputs) -> MergeOptions:
    defaults = MERGE_INPUTS
    return MergeOptions(
        plan=plan_options(inputs, defaults),
        legs=tuple(line for line in (inputs.raw("legs") or "").splitlines() if line.strip()),
        retry=retry_options(inputs, defaults),
        login=login_options(inputs),
        allow_overwrite=_bool(inputs, defaults, "allow-overwrite"),
        sign=sign_options(inputs),
    )


@dataclass(frozen=True)
class ConsumeOptions:
    image: ImageName | None
    digest: str
    tag: str
    pr_number: int | None
    sha: str
    policy: TagPolicy
    pr_sha: PrSha
    default_branch: str
    label_namespace: str
    artifact_path: str
    source: Source
    defer_artifact: bool
    check_freshness: bool
    retry: RetryOptions
    login: Login | None
    platform: str = ""
    signature: SignatureCheck = field(default_factory=SignatureCheck)


def _digest(inputs: Inputs, name: str) -> str:
    value = inputs.get(name)
    if value and not DIGEST_PATTERN.fullmatch(value):
        raise InputError(f"input '{name}' is {value!r}; give a digest of the form sha256:<64 hex digits>.")
    return value


def consume_options(inputs: Inputs) -> ConsumeOptions:
    defaults = CONSUME_INPUTS
    image_text = inputs.get("image")
    pr_text = inputs.get("pr-number")
    if pr_text and not (_WHOLE.fullmatch(pr_text) and int(pr_text) > 0):
        raise InputError(f"input 'pr-number' is {pr_text!r}; give the pull request number, e.g. 123.")
    tag = inputs.get("tag")
    return ConsumeOptions(
        image=parse_image_name(image_text, source="image") if image_text else None,
        digest=_digest(inputs, "digest"),
        tag=check_tag(tag, source="tag") if tag else "",
        pr_number=int(pr_text) if pr_text else None,
        sha=_sha(inputs, "sha"),
        policy=tag_policy(inputs, defaults),
        pr_sha=_choice(inputs, defaults, "pr-sha", PrSha),
        default_branch=inputs.get("default-branch"),
        label_namespace=check_namespace(_value(inputs, defaults, "label-namespace")),
        artifact_path=inputs.get("artifact-path"),
        source=_choice(inputs, defaults, "source", Source),
        defer_artifact=_bool(inputs, defaults, "defer-artifact"),
        check_freshness=_bool(inputs, defaults, "check-freshness"),
        retry=retry_options(inputs, defaults),
        login=login_options(inputs),
        platform=check_platform(inputs.get("platform"), source="platform") if inputs.get("platform") else "",
        signature=signature_check(inputs),
    )


@dataclass(frozen=True)
class VerifyOptions:
    reference: str
    sha: str
    label_namespace: str
    retry: RetryOptions
    login: Login | None
    signature: SignatureCheck = field(default_factory=SignatureCheck)


def verify_options(inputs: Inputs) -> VerifyOptions:
    defaults = VERIFY_INPUTS
    reference = inputs.get("image")
    if not reference:
        raise InputError("input 'image' is empty. Give the image to check as name:tag or name@sha256:<digest>.")
    sha = _sha(inputs, "sha")  # empty: the commit the event names
    return VerifyOptions(
        reference=reference,
        sha=sha,
        label_namespace=check_namespace(_value(inputs, defaults, "label-namespace")),
        retry=retry_options(inputs, defaults),
        login=login_options(inputs),
        signature=signature_check(inputs),
    )


PRUNE_INPUTS: dict[str, str] = {
    "images": "",
    "pr-max-age": "24h",
    "branch-max-age": "7d",
    "keep-newest": "1",
    "min-age": "2h",
    "closed-prs": "",
    "deleted-branches": "",
    "protect": "",
    "apply": "false",
    "max-deletes": "200",
    "tag-prefix": "",
    "tag-suffix": "",
    "sha-length": "7",
    "label-namespace": DEFAULT_NAMESPACE,
    "default-branch": "",
    "backend": "auto",
    **RETRY_INPUTS,
    **LOGIN_INPUTS,
}

_DURATION = re.compile(r"(?P<number>[0-9]{1,6})(?P<unit>[smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(inputs: Inputs, defaults: dict[str, str], name: str) -> timedelta:
    value = _value(inputs, defaults, name)
    found = _DURATION.fullmatch(value.strip().lower())
    if found is None:
        raise InputError(
            f"input '{name}' is {value!r}; give a whole number and a unit: s, m, h, d or w (e.g. 24h, 7d)."
        )
    return timedelta(seconds=int(found["number"]) * _UNITS[found["unit"]])


class Backend(enum.Enum):
    AUTO = "auto"
    """The GitHub Packages API for ghcr.io images, the OCI distribution API for every other registry."""
    OCI = "oci"
    GHCR = "ghcr"


@dataclass(frozen=True)
class PruneOptions:
    images: tuple[ImageName, ...]
    pr_max_age: timedelta
    branch_max_age: timedelta
    keep_newest: int
    min_age: timedelta
    closed_prs: frozenset[int]
    deleted_branches: frozenset[str]
    protect: tuple[str, ...]
    apply: bool
    max_deletes: int
    policy: TagPolicy
    label_namespace: str
    default_branch: str
    backend: Backend
    retry: RetryOptions
    login: Login | None


def prune_options(inputs: Inputs) -> PruneOptions:
    defaults = PRUNE_INPUTS
    images = [parse_image_name(item, source="images") for item in inputs.items("images")]
    if not images:
        raise InputError("input 'images' is empty. Name the images to prune, e.g. images: ghcr.io/acme/app.")
    closed: set[int] = set()
    for entry in inputs.items("closed-prs"):
        number = entry
        if not (_WHOLE.fullmatch(number) and int(number) > 0):
            raise InputError(f"input 'closed-prs': {entry!r} is not a pull request number; list numbers, e.g. 12, 15.")
        closed.add(int(number))
    protect = tuple(inputs.items("protect"))
    return PruneOptions(
        images=tuple(dict.fromkeys(images)),
        pr_max_age=_duration(inputs, defaults, "pr-max-age"),
        branch_max_age=_duration(inputs, defaults, "branch-max-age"),
        keep_newest=_int(inputs, defaults, "keep-newest", 0, 1000),
        min_age=_duration(inputs, defaults, "min-age"),
        closed_prs=frozenset(closed),
        deleted_branches=frozenset(inputs.items("deleted-branches")),
        protect=protect,
        apply=_bool(inputs, defaults, "apply"),
        max_deletes=_int(inputs, defaults, "max-deletes", 1, 100000),
        policy=tag_policy(inputs, defaults),
        label_namespace=check_namespace(_value(inputs, defaults, "label-namespace")),
        default_branch=inputs.get("default-branch"),
        backend=_choice(inputs, defaults, "backend", Backend),
        retry=retry_options(inputs, defaults),
        login=login_options(inputs),
    )
