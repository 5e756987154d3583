"""The cosign adapter: runs cosign as an argument list and tells its failures apart.

The key's password reaches cosign only as ``COSIGN_PASSWORD`` in its environment, never in its argv or the
log; cosign's own messages are redacted before they are shown. Nothing here decides what to sign.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from buildonce.docker.config import Login, docker_config_with_login
from buildonce.errors import RegistryError, SigningError

INSTALL_HINT = (
    "Install cosign 2.x on the runner: with buildonce's action it is installed when signing is on; elsewhere use "
    "sigstore/cosign-installer, Debian 13's cosign package, or scripts/dev-env up."
)

_UNSIGNED = re.compile(
    r"no signatures found|no matching signatures|no matching attestations|none of the attestations matched"
    r"|no certificate found|signature not found|MANIFEST_UNKNOWN",
    re.IGNORECASE,
)
_BAD_PASSWORD = re.compile(r"decrypt|incorrect password|reading password|inappropriate ioctl", re.IGNORECASE)
_TRANSIENT = re.compile(
    r"connection refused|connection reset|broken pipe|\bEOF\b|timeout|timed out|TLS handshake"
    r"|\b50[0234]\b|Internal Server Error|Bad Gateway|Service Unavailable|Gateway Timeout|TOO_MANY_REQUESTS|\b429\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def message(self) -> str:
        """cosign's error, without its warnings about the transparency log."""
        lines = [line for line in self.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
        return " ".join(lines[-3:])[:800] or f"exit status {self.code}"


@dataclass
class Cosign:
    binary: str
    env: Mapping[str, str]
    redact: Callable[[str], str] = field(default=lambda text: text)
    login: Login | None = None
    """The inputs' registry login: cosign reads it from a private Docker config, as buildx does."""
    _help: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def find(
        cls, env: Mapping[str, str], redact: Callable[[str], str] = lambda text: text, login: Login | None = None
    ) -> Cosign:
        binary = shutil.which("cosign", path=env.get("PATH"))
        if binary is None:
            raise SigningError(f"cosign is not on PATH, and signing (or verify-signature) needs it. {INSTALL_HINT}")
        return cls(binary, env, redact, login)

    def run(self, args: Sequence[str], *, timeout: float) -> Result:
        try:
            with docker_config_with_login(self.env, self.login) as env:
                done = self._run(args, env, timeout)
        except FileNotFoundError:
            raise SigningError(f"cosign ({self.binary}) cannot be run. {INSTALL_HINT}") from None
        except subprocess.TimeoutExpired:
            raise RegistryError(f"cosign {args[0]} did not finish within {timeout:.0f} s", transient=True) from None
        return Result(done.returncode, self.redact(done.stdout), self.redact(done.stderr))

    def _run(self, args: Sequence[str], env: Mapping[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args],
            env=dict(env),
            stdin=subprocess.DEVNULL,  # never a password prompt
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def version(self) -> str:
        result = self.run(["version", "--json"], timeout=30)
        try:
            version = str(json.loads(result.stdout).get("gitVersion", ""))
        except (ValueError, AttributeError):
            version = ""
        return version or "unknown"

    def takes_flag(self, command: str, flag: str) -> bool:
        """Whether this cosign's ``command`` has ``flag`` (v2 and v3 differ on the bundle format)."""
        if command not in self._help:
            result = self.run([command, "--help"], timeout=30)
            self._help[command] = result.stdout + result.stderr
        return flag in self._help[command]

    def public_key(self, key: str, directory: Path) -> Path:
        """Write the public half of ``key`` to a file: what a signature by it is verified with."""
        result = self.run(["public-key", "--key", key], timeout=60)
        if not result.ok:
            raise self.failure(f"read the public key of {key}", result)
        path = directory / "cosign.pub"
        path.write_text(result.stdout)
        return path

    def failure(self, what: str, result: Result) -> Exception:
        """The error for a failed run: a bad password or key, a registry fault (retried), or cosign's own."""
        message = result.message
        if _BAD_PASSWORD.search(result.stderr):
            return SigningError(
                f"{what}: cosign could not decrypt the key ({message}). Set COSIGN_PASSWORD in the step's "
                "environment to the key's password (from a secret)."
            )
        if _TRANSIENT.search(result.stderr):
            return RegistryError(f"{what}: {message}", transient=True)
        return SigningError(f"{what}: cosign failed: {message}")

    @staticmethod
    def unsigned(result: Result) -> bool:
        """A verification that failed because nothing matching is there (as opposed to a fault)."""
        return not result.ok and _UNSIGNED.search(result.stderr) is not None and not _TRANSIENT.search(result.stderr)
