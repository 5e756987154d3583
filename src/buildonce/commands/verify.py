"""``buildonce verify``: check, without pulling, that an image was built from a given commit."""

from __future__ import annotations

from collections.abc import Mapping

from buildonce.commands import Invocation
from buildonce.commands.connect import open_registry, retry_policy
from buildonce.docker.engine import Engine
from buildonce.errors import ContextError, FatalError, InputError, RegistryError, VerificationError
from buildonce.labels import REVISION, Keys, check_fresh
from buildonce.options import verify_options
from buildonce.references import DIGEST_PATTERN, parse_image_name, split_tag
from buildonce.tags import subject_of


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
    registry = open_registry(options.login, call.env, policy)
    try:
        labels, _ = policy.call(
            lambda: registry.labels(image, digest or tag or "latest"), f"read labels of {reference}"
        )
        resolved, _ = policy.call(lambda: registry.resolve(image, digest or tag or "latest"), f"look up {reference}")
        source = "registry"
    except RegistryError as failure:
        labels, resolved, source = _local_labels(call.env, reference, failure)
    finally:
        registry.close()
    if labels is None:
        # Not in the registry: an image loaded from an artifact is only in the engine.
        missing = VerificationError(f"{reference} is neither in the registry nor in the local engine.")
        labels, resolved, source = _local_labels(call.env, reference, missing)
    check_fresh(reference, labels, sha, keys)
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


def _local_labels(env: Mapping[str, str], reference: str, failure: FatalError) -> tuple[dict[str, str], str, str]:
    try:
        engine = Engine.connect(env)
    except FatalError:
        raise failure from None
    image = engine.inspect(reference)
    engine.close()
    if image is None:
        raise failure
    return image.labels, image.id, "local"
