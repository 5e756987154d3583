"""A real Distribution registry (Debian's ``docker-registry``) on 127.0.0.1, for tests and benchmarks.

Each instance has its own storage directory and a free port; with ``users`` it requires htpasswd (bcrypt)
logins, with ``token`` bearer tokens from that token service (as hosted registries do). Loopback registries
are plain HTTP, which Docker allows without configuration.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from token_server import TokenServer

TEST_USER = "buildonce"
TEST_PASSWORD = "not-a-real-secret-4821"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def registry_binary() -> str:
    found = shutil.which("docker-registry") or shutil.which("registry")
    if found is None:
        raise RuntimeError("docker-registry is not installed; run scripts/dev-env up")
    return found


def _htpasswd_line(user: str, password: str) -> str:
    # bcrypt, as Distribution requires; the password goes through stdin, never argv.
    result = subprocess.run(["htpasswd", "-niB", user], input=password, capture_output=True, text=True, check=True)
    return result.stdout.strip() + "\n"


SESSION_ADDRESSES: set[str] = set()
"""Every address a registry (or a proxy in front of one) of this test process has listened on."""


class RegistryServer:
    def __init__(
        self,
        root: Path,
        *,
        users: dict[str, str] | None = None,
        port: int | None = None,
        token: TokenServer | None = None,
    ) -> None:
        self.root = root
        self.users = users or (token.users if token else {})
        self.token = token
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def _config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        auth = ""
        if self.token is not None:
            auth = self.token.registry_auth_config()
        elif self.users:
            htpasswd = self.root / "htpasswd"
            htpasswd.write_text("".join(_htpasswd_line(user, password) for user, password in self.users.items()))
            auth = f"auth:\n  htpasswd:\n    realm: buildonce-test\n    path: {htpasswd}\n"
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            # The blob descriptor cache, as in the registry's own default config (Debian's included).
            "storage:\n  cache:\n    blobdescriptor: inmemory\n"
            f"  filesystem:\n    rootdirectory: {self.root / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.address}\n" + auth
        )
        return config

    def start(self) -> RegistryServer:
        SESSION_ADDRESSES.add(self.address)
        config = self._config()
        with (self.root / "registry.log").open("ab") as log:
            self.process = subprocess.Popen([registry_binary(), "serve", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"registry exited early; see {self.root / 'registry.log'}")
            if self._answers():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"registry on {self.address} did not answer in 15 s")

    def data_size(self) -> int:
        """Bytes the registry's storage holds on disk."""
        return sum(path.stat().st_size for path in (self.root / "data").rglob("*") if path.is_file())

    def garbage_collect(self) -> int:
        """Run Distribution's garbage collection (the registry stopped, as its documentation requires) and start
        it again on the same port; returns the bytes it freed. Without --delete-untagged: that option deletes
        the children of a multi-platform index in Distribution 2.8."""
        before = self.data_size()
        self.stop()
        subprocess.run(
            [registry_binary(), "garbage-collect", str(self.root / "config.yml")],
            capture_output=True,
            check=True,
            timeout=120,
        )
        self.start()
        return before - self.data_size()

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.url}/v2/", timeout=1)  # noqa: S310 - loopback test server
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
