"""Pull and name images with the docker CLI, as the user's own ``docker pull`` would.

consume's registry path needs nothing of the engine but a pull by digest and a tag, and the CLI does both
in a few milliseconds where the Docker SDK takes a tenth of a second to import (and more to compile on a
job's first run). The CLI also honours what the SDK does not: the current docker context, credential
helpers. Each call is an argument list, and the credentials come from the Docker config the caller's
environment names (``docker_config_with_login``), never from the command line.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence

from buildonce.docker.ahead import PullAhead, stop, which
from buildonce.docker.messages import START_THE_ENGINE, classify_push_error, settle_tag
from buildonce.errors import EngineError, RegistryError
from buildonce.references import ImageName, Reference

LONGEST_MESSAGE = 2000
_UNREACHABLE = ("cannot connect to the docker daemon", "error during connect", "is the docker daemon running")


class CliPuller:
    """``docker pull`` and ``docker tag``, each one attempt; the retry policy decides whether to try again."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        found = which("docker", self.env.get("PATH", os.defpath))
        if found is None:
            raise EngineError(
                "the docker CLI is not on this runner's PATH. Use a runner with Docker (ubuntu-latest has it) "
                "or install Docker before this step."
            )
        self.docker = found

    def pull(self, image: ImageName, digest: str, timeout: float, *, platform: str = "") -> None:
        """Pull ``name@digest`` (of ``platform`` from an index, when given, else the engine's own), once.
        Raises RegistryError (transient or not), or EngineError."""
        self.start(image, digest, timeout, platform=platform).wait()

    def start(
        self, image: ImageName, digest: str, timeout: float, *, platform: str = "", ahead: PullAhead | None = None
    ) -> PendingPull:
        """Start one pull of ``name@digest`` and return at once: the engine fetches it while the caller goes
        on. ``wait`` ends it as ``pull`` would; ``cancel`` stops it. A pull started ``ahead`` is this one
        when it runs the very same command, else it is stopped."""
        reference = image.with_digest(digest)
        args = ["pull", "--quiet", *(["--platform", platform] if platform else []), reference]
        process = ahead.take([self.docker, *args], self.env) if ahead else None
        return PendingPull(self, digest, reference, process or self._spawn(args), timeout)

    def tag(self, source: str, reference: Reference) -> None:
        def attempt() -> str | None:
            code, text = self._run(["tag", source, str(reference)], 60)
            if code == 0:
                return None
            if code is not None and _unreachable(text):
                raise self._failure(str(reference), text, "tagging")
            return text or f"docker tag exited {code}"

        settle_tag(attempt, source, str(reference))

    def _run(self, args: Sequence[str], timeout: float) -> tuple[int | None, str]:
        """The exit status (None when cut at the deadline) and what the CLI said on failure."""
        return _collect(self._spawn(args), timeout)

    def _spawn(self, args: Sequence[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [self.docker, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            text=True,
        )

    def _failure(self, reference: str, text: str, action: str) -> EngineError | RegistryError:
        if _unreachable(text):
            return EngineError(f"{action} {reference}: cannot reach the Docker engine ({text}). {START_THE_ENGINE}")
        return classify_push_error(reference, text.removeprefix("Error response from daemon: "), action)


class PendingPull:
    """One ``docker pull`` under way; its deadline counts from its start."""

    def __init__(
        self, puller: CliPuller, digest: str, reference: str, process: subprocess.Popen[str], timeout: float
    ) -> None:
        self.digest = digest
        self._puller = puller
        self._reference = reference
        self._process = process
        self._deadline = time.monotonic() + timeout
        self._timeout = timeout

    def wait(self) -> None:
        """Wait for the pull to end; raises RegistryError (transient or not), or EngineError."""
        code, text = _collect(self._process, self._deadline - time.monotonic())
        if code is None:
            raise RegistryError(f"pulling {self._reference}: no answer within {self._timeout:.0f} s", transient=True)
        if code != 0:
            raise self._puller._failure(self._reference, text, "pulling")

    def cancel(self) -> None:
        """Stop the pull unless it has ended: the CLI closes its request, and the engine cancels the pull."""
        if self._process.poll() is None:
            stop(self._process)
        else:
            self._process.communicate()


def _collect(process: subprocess.Popen[str], timeout: float) -> tuple[int | None, str]:
    """The exit status (None when cut at the deadline) and what the CLI said on failure."""
    try:
        out, err = process.communicate(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        stop(process)
        return None, ""
    text = (err or out).strip()
    return process.returncode, text[-LONGEST_MESSAGE:]


def _unreachable(text: str) -> bool:
    lowered = text.lower()
    return any(phrase in lowered for phrase in _UNREACHABLE)
