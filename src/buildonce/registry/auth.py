"""Registry auth: the challenges a registry answers with, and the scopes a token is asked for.

The credentials themselves come from the inputs or the Docker config (``buildonce.docker.config``); the
client fetches and refreshes the tokens.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass

from buildonce.references import ImageName

_CHALLENGE_PARAM = re.compile(r'([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))')


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header: ``basic`` or ``bearer`` with its parameters (realm, service …)."""

    scheme: str
    params: Mapping[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """Read the first challenge of a ``WWW-Authenticate`` header (quoted values may hold commas)."""
    match = re.match(r"\s*([A-Za-z][\w-]*)\s*(.*)", header, re.DOTALL)
    if match is None:
        return None
    scheme, rest = match.group(1).lower(), match.group(2)
    params: dict[str, str] = {}
    for param in _CHALLENGE_PARAM.finditer(rest):
        quoted, bare = param.group(2), param.group(3)
        params[param.group(1).lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
    return Challenge(scheme, params)


def scope(image: ImageName, actions: str) -> str:
    return f"repository:{image.repository}:{actions}"


def basic_authorization(username: str, password: str) -> str:
    """An ``Authorization: Basic`` value; latin-1 like requests, UTF-8 for what latin-1 cannot carry."""
    try:
        raw = f"{username}:{password}".encode("latin-1")
    except UnicodeEncodeError:
        raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")
