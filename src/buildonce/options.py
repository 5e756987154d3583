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
from typing import Any, TypeVar

from buildonce.compression import Compression
from buildonce.docker.config import Login
from buildonce.docker.spec import Secret
from buildonce.errors import InputError
from buildonce.github.workflow import Inputs
from buildonce.labels import DEFAULT_NAMESPACE, check_annotation, check_label, check_namespace, parse_labels
from buildonce.platforms import check_platform
from buildonce.references import (
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
    SignOptions,
    sign_options,
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
WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")
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


E = TypeVar("E", bound=enum.Enum)


def read_value(inputs: Inputs, defaults: dict[str, str], name: str) -> str:
    return inputs.get(name, defaults[name])


def read_choice(inputs: Inputs, defaults: dict[str, str], name: str, kind: type[E]) -> E:
    value = read_value(inputs, defaults, name)
    for member in kind:
        if member.value == value.lower():
            return member
    allowed = ", ".join(str(member.value) for member in kind)
    raise InputError(f"input '{name}' is {value!r}; it must be one of: {allowed}.")


def read_bool(inputs: Inputs, defaults: dict[str, str], name: str) -> bool:
    value = read_value(inputs, defaults, name)
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InputError(f"input '{name}' is {value!r}; it must be true or false.")


def read_int(inputs: Inputs, defaults: dict[str, str], name: str, low: int, high: int) -> int:
    value = read_value(inputs, defaults, name)
    if not WHOLE_NUMBER.fullmatch(value):
        raise InputError(f"input '{name}' is {value!r}; it must be a whole number from {low} to {high}.")
    number = int(value)
    if not low <= number <= high:
        raise InputError(f"input '{name}' is {number}; it must be from {low} to {high}.")
    return number


def read_float(inputs: Inputs, defaults: dict[str, str], name: str, low: float, high: float) -> float:
    value = read_value(inputs, defaults, name)
    if not _NUMBER.fullmatch(value):
        raise InputError(f"input '{name}' is {value!r}; it must be a number from {low:g} to {high:g}.")
    number = float(value)
    if not low <= number <= high:
        raise InputError(f"input '{name}' is {value}; it must be from {low:g} to {high:g}.")
    return number


def read_sha(inputs: Inputs, name: str) -> str:
    value = inputs.get(name).lower()
    if value and not _SHA.fullmatch(value):
        raise InputError(f"input '{name}' is {value!r}; give the full 40-character commit sha.")
    return value


def read_affix(inputs: Inputs, name: str, pattern: str) -> str:
    value = inputs.get(name)
    if value and not re.fullmatch(pattern, value):
        raise InputError(
            f"input '{name}' is {value!r}; it may hold only letters, digits, '_', '.' and '-'"
            + (" and must not start with '.' or '-'." if name == "tag-prefix" else ".")
        )
    return value


def tag_policy(inputs: Inputs, defaults: dict[str, str]) -> TagPolicy:
    return TagPolicy(
        sha_length=read_int(inputs, defaults, "sha-length", 7, 40),
        prefix=read_affix(inputs, "tag-prefix", r"[A-Za-z0-9_][A-Za-z0-9._-]*"),
        suffix=read_affix(inputs, "tag-suffix", r"[A-Za-z0-9._-]*"),
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
        label_namespace=check_namespace(read_value(inputs, defaults, "label-namespace")),
        metadata=metadata,
        policy=tag_policy(inputs, defaults),
        pr_sha=read_choice(inputs, defaults, "pr-sha", PrSha),
        default_branch=inputs.get("default-branch"),
        platforms=tuple(dict.fromkeys(check_platform(item) for item in inputs.items("platforms"))),
        push=read_choice(inputs, defaults, "push", Switch),
        load=read_choice(inputs, defaults, "load", Switch),
        artifact=read_choice(inputs, defaults, "artifact", Switch),
        artifact_name=artifact_name,
    )


@dataclass(frozen=True)
class RetryOptions:
    attempts: int
    wait_seconds: float
    timeout_seconds: float


def retry_options(inputs: Inputs, defaults: dict[str, str]) -> RetryOptions:
    return RetryOptions(
        attempts=read_int(inputs, defaults, "retry-attempts", 1, 20),
        wait_seconds=read_float(inputs, defaults, "retry-wait-seconds", 0, 600),
        timeout_seconds=read_float(inputs, defaults, "timeout-minutes", 0.05, 360) * 60,
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
        context=read_value(inputs, defaults, "context"),
        file=inputs.get("file"),
        build_args=_build_args(inputs),
        target=inputs.get("target"),
        cache_from=tuple(inputs.lines("cache-from")),
        cache_to=tuple(inputs.lines("cache-to")),
        builder=inputs.get("builder"),
        provenance=inputs.get("provenance"),
        sbom=inputs.get("sbom"),
        secrets=_secrets(inputs),
        no_cache=read_bool(inputs, defaults, "no-cache"),
        pull=read_bool(inputs, defaults, "pull"),
        network=inputs.get("network"),
        retry=retry_options(inputs, defaults),
        login=login_options(inputs),
        allow_overwrite=read_bool(inputs, defaults, "allow-overwrite"),
        rebuild=read_bool(inputs, defaults, "rebuild"),
        push_via=read_choice(inputs, defaults, "push-via", PushVia),
        artifact_dir=inputs.get("artifact-dir"),
        compression=read_choice(inputs, defaults, "artifact-compression", Compression),
        distribute=read_choice(inputs, defaults, "distribute", Distribute),
        reuse=read_choice(inputs, defaults, "reuse", Reuse),
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
        allow_overwrite=read_bool(inputs, defaults, "allow-overwrite"),
        sign=sign_options(inputs),
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
