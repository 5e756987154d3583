"""The inputs of the commands that read a published image, ``consume`` and ``verify``: checked once, as
``buildonce.options`` checks the build's (whose readers they share); imported only by those commands."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from buildonce.docker.config import Login
from buildonce.errors import InputError
from buildonce.github.workflow import Inputs
from buildonce.labels import check_namespace
from buildonce.options import (
    CONSUME_INPUTS,
    VERIFY_INPUTS,
    WHOLE_NUMBER,
    RetryOptions,
    login_options,
    read_bool,
    read_choice,
    read_sha,
    read_value,
    retry_options,
    tag_policy,
)
from buildonce.platforms import check_platform
from buildonce.references import DIGEST_PATTERN, ImageName, check_tag, parse_image_name
from buildonce.signing import SignatureCheck, signature_check
from buildonce.tags import PrSha, TagPolicy


class Source(enum.Enum):
    AUTO = "auto"
    """The registry, then the artifact (when one is given) if the registry cannot serve the image."""
    REGISTRY = "registry"
    ARTIFACT = "artifact"


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
    if pr_text and not (WHOLE_NUMBER.fullmatch(pr_text) and int(pr_text) > 0):
        raise InputError(f"input 'pr-number' is {pr_text!r}; give the pull request number, e.g. 123.")
    tag = inputs.get("tag")
    return ConsumeOptions(
        image=parse_image_name(image_text, source="image") if image_text else None,
        digest=_digest(inputs, "digest"),
        tag=check_tag(tag, source="tag") if tag else "",
        pr_number=int(pr_text) if pr_text else None,
        sha=read_sha(inputs, "sha"),
        policy=tag_policy(inputs, defaults),
        pr_sha=read_choice(inputs, defaults, "pr-sha", PrSha),
        default_branch=inputs.get("default-branch"),
        label_namespace=check_namespace(read_value(inputs, defaults, "label-namespace")),
        artifact_path=inputs.get("artifact-path"),
        source=read_choice(inputs, defaults, "source", Source),
        defer_artifact=read_bool(inputs, defaults, "defer-artifact"),
        check_freshness=read_bool(inputs, defaults, "check-freshness"),
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
    sha = read_sha(inputs, "sha")  # empty: the commit the event names
    return VerifyOptions(
        reference=reference,
        sha=sha,
        label_namespace=check_namespace(read_value(inputs, defaults, "label-namespace")),
        retry=retry_options(inputs, defaults),
        login=login_options(inputs),
        signature=signature_check(inputs),
    )
