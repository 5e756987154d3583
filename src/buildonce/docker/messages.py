"""What the engine and the docker CLI say when a registry request fails, sorted into transient faults (worth
another attempt) and permanent ones, with a hint at what to fix.

Pure text: the SDK's streamed errors (``buildonce.docker.engine``) and the CLI's standard error
(``buildonce.docker.cli``) read the same way.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable

from buildonce.errors import EngineError, RegistryError

TAG_ATTEMPTS = 5
START_THE_ENGINE = "Start Docker on the runner (or set DOCKER_HOST); locally, scripts/dev-env up starts one."
"""What every failure to reach the engine says to do, from the SDK or the CLI."""

# What the engine reports when a registry request fails: "unexpected status from PUT request to …: 503
# Service Unavailable", "failed to do request: Put …: EOF", "…: read: connection reset by peer". A status
# code counts only followed by its reason phrase, so digits inside digests and URLs never match.
_TRANSIENT_PATTERNS = (
    r"\b(5\d\d|429|408) [a-z]",
    r"too ?many ?requests",
    r"connection refused",
    r"connection reset",
    r"broken pipe",
    r"use of closed network connection",
    r"(^|[:\s])eof$",
    r"unexpected eof",
    r"i/o timeout",
    r"timed? ?out",
    r"timeout",
    r"deadline exceeded",
    r"tls handshake",
    r"server closed",
)
_AUTH_PATTERNS = (
    r"\b401 [a-z]",
    r"unauthori[sz]ed",
    r"authentication required",
    r"no basic auth credentials",
    r"authorization failed",
)
_DENIED_PATTERNS = (r"\b403 [a-z]", r"denied", r"forbidden", r"insufficient_scope")
_NAME_UNKNOWN = (r"name unknown", r"name_unknown", r"repository name not known", r"repository does not exist")
_INVALID = (r"manifest invalid", r"manifest_invalid", r"blob unknown", r"blob_unknown", r"invalid manifest")


def _matches(patterns: Iterable[str], text: str) -> bool:
    return any(re.search(pattern, text) for pattern in patterns)


def classify_push_error(reference: str, message: str, action: str = "pushing") -> RegistryError:
    """Turn an error the engine reported while pushing (or pulling) into a transient or permanent one."""
    text = message.lower()
    host = reference.split("/", 1)[0] if "/" in reference else "docker.io"
    if _matches(_AUTH_PATTERNS, text):
        return RegistryError(
            f"{action} {reference}: the registry refused the credentials ({message.strip()}). "
            f"Log in to {host} before this step (docker/login-action) or set the username and password inputs."
        )
    if _matches(_DENIED_PATTERNS, text):
        return RegistryError(
            f"{action} {reference}: access denied ({message.strip()}). The credentials for {host} lack push "
            "access to this repository (for GHCR, give the job 'permissions: packages: write')."
        )
    if _matches(_NAME_UNKNOWN, text):
        return RegistryError(
            f"{action} {reference}: the registry does not know this repository ({message.strip()}). "
            "Create it first, or check the image name."
        )
    if _matches(_INVALID, text):
        return RegistryError(f"{action} {reference}: the registry rejected the image ({message.strip()}).")
    if _matches(_TRANSIENT_PATTERNS, text):
        return RegistryError(f"{action} {reference}: {message.strip()}", transient=True)
    return RegistryError(f"{action} {reference}: {message.strip()}")


def settle_tag(try_tag: Callable[[], str | None], source: str, reference: str) -> None:
    """Name ``source`` as ``reference`` with ``try_tag`` (None when done, else the engine's complaint).

    The containerd store replaces a name by deleting and creating it: another job naming the same image at
    that moment makes the create fail with "already exists". Asking again settles it; anything else fails.
    """
    for attempt in range(1, TAG_ATTEMPTS + 1):
        text = try_tag()
        if text is None:
            return
        if "already exists" not in text or attempt == TAG_ATTEMPTS:
            raise EngineError(f"tagging {source} as {reference}: {text}")
        time.sleep(0.05 * attempt)
