"""The failures buildonce reports to its user, each with what to do about it.

One handler in ``buildonce.cli`` turns any of these into a single ``::error::`` line and an exit status.
Everything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class FatalError(Exception):
    """A failure the user can act on. The message says what happened and how to fix it."""

    exit_code = 1
    title = "buildonce"


class InputError(FatalError):
    """An input, flag or file given to buildonce is invalid."""

    title = "Invalid input"


class ContextError(FatalError):
    """The GitHub event or environment cannot be understood."""

    title = "Unsupported GitHub context"


class EngineError(FatalError):
    """The Docker engine or buildx is missing or failed."""

    title = "Docker engine"


class BuildError(FatalError):
    """``docker buildx build`` failed. Never retried: a registry fault is not a build fault."""

    title = "Build failed"


class RegistryError(FatalError):
    """The registry refused or kept failing a request."""

    title = "Registry"

    def __init__(self, message: str, *, transient: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


class ImmutableTagError(FatalError):
    """An immutable tag already holds an image of another commit."""

    title = "Immutable tag taken"


class VerificationError(FatalError):
    """The registry does not serve what was pushed, or an image is not the one expected."""

    title = "Verification failed"


class ArtifactError(FatalError):
    """The image tar artifact is missing, corrupted or not the image expected."""

    title = "Artifact"


class SigningError(FatalError):
    """cosign is missing, or could not sign, attest or verify."""

    title = "Signing"


class SignatureError(FatalError):
    """An image or artifact is not signed by the key or identity required."""

    title = "Signature verification"
