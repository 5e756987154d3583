"""``buildonce verify``: check, without pulling, that an image was built from a given commit."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from buildonce.commands import Invocation
from buildonce.commands.connect import open_registry, retry_policy
from buildonce.commands.sign import every_digest, signature_verifier
from buildonce.consume_options import verify_options
from buildonce.docker.engine import Engine
from buildonce.errors import ContextError, FatalError, InputError, RegistryError, VerificationError
from buildonce.labels import REVISION, Keys, check_fresh
from buildonce.references import DIGEST_PATTERN, ImageName, parse_image_name, split_tag
from buildonce.tags import subject_of

if TYPE_CHECKING:
    from buildonce.commands.seams import EngineAPI, RegistryAPI
    from buildonce.retry import RetryPolicy


def run(call: Invocation) -> None:
    """Check, without pulling, that an image (name:tag or name@digest) was built from a commit."""
    options = verify_options(call.inputs)
    console = call.console
    sha = options.sha or _event_commit(call)
    keys = Keys(options.label_namespace)
    reference = options.reference
    name, _, digest = reference.partition("@")
    tag = ""
    if not digest:
        name, tag = split_tag(reference)
    if digest and not DIGEST_PATTERN.fullmatch(digest):
        raise InputError(f"input 'image': {reference!r} has an invalid digest; use name@sha256:<64 hex digits>.")
    image = parse_image_name(name, source="image")
    policy = retry_policy(options.retry, console)
    signatures = signature_verifier(options.signature, call.env, console, policy, sha=sha, login=options.login)
    registry = open_registry(options.login, call.env, policy)
    try:
        labels, resolved, source = find_labels(
            registry, partial(Engine.connect, call.env), policy, image, digest or tag or "latest", reference=reference
        )
        check_fresh(reference, labels, sha, keys)
        if signatures is not None:
            if source != "registry" or not resolved:
                raise VerificationError(f"{reference} is not in the registry, so its signature cannot be checked.")
            signatures.image(image, every_digest(registry, policy, image, resolved), f"{reference} → {resolved}")
    finally:
        registry.close()
    console.info(f"{reference} was built from {sha} ({source})")
    call.finish({"digest": resolved or "", "revision": labels.get(REVISION, ""), "source": source})


def _event_commit(call: Invocation) -> str:
    """The commit the event names, as the build tagged it (a pull request's head): verify's default."""
    if not call.has_event:
        raise InputError(
            "input 'sha' is empty and there is no event to take the commit from. "
            "Give the full commit sha the image must have been built from."
        )
    context = call.context()
    try:
        return subject_of(context).sha
    except ContextError:
        if context.upstream is None:
            raise
        return context.upstream.head_sha  # a fork's pull request: no number to tag by, but a commit


Found = tuple[dict[str, str], str, str]
"""An image's labels, its digest (or local id), and where they were read: "registry" or "local"."""


def find_labels(
    registry: RegistryAPI,
    connect: Callable[[], EngineAPI],
    policy: RetryPolicy,
    image: ImageName,
    ref: str,
    *,
    reference: str,
) -> Found:
    """The labels of ``image`` at ``ref`` (a tag or digest) from the registry; from the local engine when the
    registry cannot answer or does not hold it (an image loaded from an artifact is only there)."""
    try:
        labels, _ = policy.call(lambda: registry.labels(image, ref), f"read labels of {reference}")
        resolved, _ = policy.call(lambda: registry.resolve(image, ref), f"look up {reference}")
    except RegistryError as failure:
        return _local_labels(connect, reference, failure)
    if labels is None:
        missing = VerificationError(f"{reference} is neither in the registry nor in the local engine.")
        return _local_labels(connect, reference, missing)
    return labels, resolved or "", "registry"


def _local_labels(connect: Callable[[], EngineAPI], reference: str, failure: FatalError) -> Found:
    try:
        engine = connect()
    except FatalError:
        raise failure from None
    image = engine.inspect(reference)
    engine.close()
    if image is None:
        raise failure
    return image.labels, image.id, "local"
