"""A pull started before buildonce has imported anything: ``consume`` of a digest given.

``python -m buildonce consume`` spends its first tens of milliseconds importing; when the inputs name a digest,
the engine can be pulling it meanwhile. That is decided from the raw inputs alone, for the plainest case only,
and on the side of not pulling:

- the command is ``consume``, with no flag but ``--input defer-artifact=…`` (what consume.sh adds);
- ``digest`` is ``sha256:`` and 64 lowercase hex digits, and ``image`` a plain lowercase repository name
  (a host, an optional port, path components), with nothing else in either;
- ``source`` is empty, auto or registry; ``verify-signature`` is empty or false (a signature is verified before
  anything is pulled); ``platform``, ``username`` and ``password`` are empty. Every spelling of each input
  (``INPUT_VERIFY_SIGNATURE`` and ``INPUT_VERIFY-SIGNATURE``) is looked at.

The pull is ``docker pull --quiet <image>@<digest>``, an argument list in this process's environment. The
command adopts it (``take``) only when the pull it would start itself is this very one, the same argument
list in the same environment; otherwise, and whenever the run ends without adopting it, it is stopped. It
prints nothing. Nothing but the standard library's ``os``, ``subprocess``, ``itertools`` and
``collections.abc`` is imported here (no ``re``, ``shutil`` or ``pathlib``: each would delay the pull).
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Mapping, Sequence

_HEX = frozenset("0123456789abcdef")
_NAME = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_SEPARATORS = frozenset("._-")
_FLAGS = ("--input", "-i")
STOP_SECONDS = 10
"""How long a stopped CLI gets to cancel its pull before it is killed."""


class PullAhead:
    """One ``docker pull`` started before the imports, until the command takes it or it is stopped."""

    def __init__(self, argv: list[str], env: dict[str, str], process: subprocess.Popen[str]) -> None:
        self.argv = argv
        self.env = env
        self._process: subprocess.Popen[str] | None = process

    def take(self, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[str] | None:
        """The running pull, when it is the one of ``argv`` in ``env``; else None, and it is stopped."""
        process, self._process = self._process, None
        if process is None:
            return None
        if list(argv) == self.argv and dict(env) == self.env:
            return process
        stop(process)
        return None

    def cancel(self) -> None:
        """Stop the pull unless the command took it."""
        process, self._process = self._process, None
        if process is not None:
            stop(process)


def pull_ahead(argv: Sequence[str], env: Mapping[str, str]) -> PullAhead | None:
    """Start the pull of the digest the inputs name, when they name it in the plainest way (see above)."""
    reference = _plain_reference(argv, env)
    docker = which("docker", env.get("PATH", os.defpath)) if reference else None
    if reference is None or docker is None:
        return None
    command = [docker, "pull", "--quiet", reference]
    environment = dict(env)
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
            text=True,
        )
    except OSError:
        return None  # the command starts its own pull, and says what is wrong
    return PullAhead(command, environment, process)


def _plain_reference(argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    """``image@digest`` when the command and its inputs are the plainest consume of a digest, else None."""
    digest, image = env.get("INPUT_DIGEST", "").strip(), env.get("INPUT_IMAGE", "").strip()
    plain = (
        bool(argv)
        and argv[0] == "consume"
        and _only_defer_artifact(argv[1:])
        and _is_digest(digest)
        and _is_repository(image)
        and all(value in ("", "auto", "registry") for value in _spellings(env, "SOURCE"))
        and all(value in ("", "false") for value in _spellings(env, "VERIFY_SIGNATURE"))
        and not any(value for name in ("PLATFORM", "USERNAME", "PASSWORD") for value in _spellings(env, name))
    )
    return f"{image}@{digest}" if plain else None


def _only_defer_artifact(flags: Sequence[str]) -> bool:
    values: list[str] = []
    rest = list(flags)
    while rest:
        flag = rest.pop(0)
        if flag in _FLAGS and rest:
            values.append(rest.pop(0))
        elif flag.startswith("--input="):
            values.append(flag.removeprefix("--input="))
        else:
            return False
    return all(value.partition("=")[0].strip().lower().replace("_", "-") == "defer-artifact" for value in values)


def _spellings(env: Mapping[str, str], name: str) -> list[str]:
    keys = {f"INPUT_{name}", f"INPUT_{name.replace('_', '-')}"}
    return [env[key].strip().lower() for key in keys if key in env]


def _is_digest(value: str) -> bool:
    algorithm, _, hexdigits = value.partition(":")
    return algorithm == "sha256" and len(hexdigits) == 64 and set(hexdigits) <= _HEX


def _is_repository(value: str) -> bool:
    """``host[:port]/path/components``, each component lowercase letters and digits joined by single
    separators: a name no normalisation changes."""
    host, _, path = value.partition("/")
    if not path:
        return False
    hostname, colon, port = host.partition(":")
    if colon and not (port.isdigit() and port.isascii() and len(port) <= 5):
        return False
    return _is_component(hostname) and all(_is_component(part) for part in path.split("/"))


def _is_component(part: str) -> bool:
    if not part or part[0] not in _NAME or part[-1] not in _NAME or not set(part) <= _NAME | _SEPARATORS:
        return False
    return not any(a in _SEPARATORS and b in _SEPARATORS for a, b in itertools.pairwise(part))


def which(program: str, path: str) -> str | None:
    """The first executable ``program`` on ``path`` (``shutil.which`` without its imports)."""
    for directory in path.split(os.pathsep):
        # os.path, not pathlib: nothing more is imported before the pull starts.
        candidate = os.path.join(directory or os.curdir, program)  # noqa: PTH118
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):  # noqa: PTH113
            return candidate
    return None


def stop(process: subprocess.Popen[str]) -> None:
    """End a CLI process: SIGTERM first, so that the CLI closes its request and the engine cancels the pull;
    killed if it has not ended within STOP_SECONDS."""
    if process.poll() is None:
        process.terminate()
    try:
        process.communicate(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
