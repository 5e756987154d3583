"""The docker CLI's configuration, read in one place: where it is, the credentials it holds for a registry
(config.json's ``auths`` or the credential helper it names), what buildx records there about its builders,
and the one rule for Docker Hub's many names."""

from __future__ import annotations

import base64
import contextlib
import json
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildonce.references import DOCKER_HUB

DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
"""The key the docker CLI files Docker Hub's credentials under in config.json."""
HUB_ALIASES = frozenset({DOCKER_HUB, "index.docker.io", DOCKER_HUB_API, "registry.hub.docker.com"})
TOKEN_USERNAME = "<token>"  # noqa: S105 - a marker, not a secret
"""Docker's marker, in place of a user name, for an identity (OAuth refresh) token in place of a password."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    """Never printed, never put in argv; ``repr`` leaves it out so that a stray log line cannot show it."""


@dataclass(frozen=True)
class Login:
    """Credentials for one registry, as the inputs give them."""

    registry: str
    username: str
    password: str = ""

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.username, self.password)


def normalize_registry(name: str) -> str:
    """A registry key as logins and the Docker config name it: ``https://index.docker.io/v1/`` is docker.io."""
    host = name.strip()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].lower()
    return DOCKER_HUB if host in HUB_ALIASES else host


def config_key(registry: str) -> str:
    """The key config.json's ``auths`` files ``registry``'s credentials under."""
    return DOCKER_HUB_CONFIG_KEY if normalize_registry(registry) == DOCKER_HUB else registry


def credentials_from_entry(entry: Mapping[str, Any] | None) -> Credentials | None:
    """Credentials from the Docker SDK's auth entry, which spells keys differently per source."""
    if not entry:
        return None
    token = entry.get("IdentityToken") or entry.get("identitytoken")
    if token:
        return Credentials(TOKEN_USERNAME, str(token))
    username = entry.get("username") or entry.get("Username")
    password = entry.get("password") or entry.get("Password")
    if username and password:
        return Credentials(str(username), str(password))
    return None


def docker_config_dir(env: Mapping[str, str]) -> Path:
    """``$DOCKER_CONFIG``, else ``~/.docker``, as the docker CLI finds it."""
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"])
    return Path(env.get("HOME") or Path.home()) / ".docker"


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


SYSTEM_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)
"""Where the docker CLI looks for plugins on Linux after config.json's ``cliPluginsExtraDirs`` and
``$DOCKER_CONFIG/cli-plugins``, in its order."""


def plugin_dirs(env: Mapping[str, str]) -> list[Path]:
    """The directories the docker CLI looks for its plugins in, in its order."""
    config_dir = docker_config_dir(env)
    extra = (_json(config_dir / "config.json") or {}).get("cliPluginsExtraDirs")
    named = [Path(item) for item in extra if isinstance(item, str)] if isinstance(extra, list) else []
    return [*named, config_dir / "cli-plugins", *(Path(item) for item in SYSTEM_PLUGIN_DIRS)]


def recorded_driver(builder: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """The (name, driver) of the builder buildx would use, read from its files; None when unsure.

    Reading two small files takes a millisecond where ``docker buildx inspect`` takes over a hundred.
    Anything unusual (another docker context, a builder named after a context) returns None, and the
    caller asks buildx itself.
    """
    config = docker_config_dir(env)
    context = env.get("DOCKER_CONTEXT") or (_json(config / "config.json") or {}).get("currentContext")
    if context not in (None, "", "default"):
        return None
    name = builder or env.get("BUILDX_BUILDER", "")
    if not name:
        current = _json(config / "buildx" / "current")
        if current is not None:
            endpoint = env.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
            if not current.get("Global") and current.get("Key") != endpoint:
                return None
            name = str(current.get("Name") or "")
    if name in ("", "default"):
        return "default", "docker"
    instance = _json(config / "buildx" / "instances" / name)
    if instance is None or not isinstance(instance.get("Driver"), str):
        return None
    return name, str(instance["Driver"])


class ConfigError(Exception):
    """config.json, or the credential helper it names, cannot be read."""


def stored_credentials(config_dir: Path, registry: str) -> Credentials | None:
    """Credentials for ``registry`` as the docker CLI would find them: config.json's ``auths``, or the
    credential helper it names (``credsStore`` / ``credHelpers``). Raises ConfigError."""
    path = config_dir / "config.json"
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read Docker credentials from {path}: {exc}") from None
    if not isinstance(data, dict) or not any(data.get(key) for key in ("auths", "credsStore", "credHelpers")):
        return None
    from docker import auth as docker_auth  # the SDK's helper protocol, loaded only when a config needs it
    from docker.errors import DockerException

    try:
        with warnings.catch_warnings():
            # The SDK warns when a credential helper is not installed, then fails to use it; the
            # failure below says so in a message of ours.
            warnings.simplefilter("ignore")
            config = docker_auth.load_config(config_dict=dict(data))
            entry = config.resolve_authconfig(registry)
    except (DockerException, ValueError) as exc:
        raise ConfigError(f"cannot read the Docker credentials for {registry} from {path}: {exc}") from None
    return credentials_from_entry(entry)


def config_with_login(source: Path, login: Login) -> dict[str, Any]:
    """The config.json at ``source`` with ``login`` put in its ``auths``, and no store or helper that would be
    asked for that registry first."""
    config: dict[str, Any] = {}
    try:
        loaded = json.loads((source / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        loaded = {}
    if isinstance(loaded, dict):
        config = loaded
    token = base64.b64encode(f"{login.username}:{login.password}".encode()).decode()
    config.setdefault("auths", {})[config_key(login.registry)] = {"auth": token}
    # A credential store or helper would be asked before "auths"; this registry must come from the file.
    config.pop("credsStore", None)
    config.get("credHelpers", {}).pop(login.registry, None)
    return config


@contextlib.contextmanager
def docker_config_with_login(env: Mapping[str, str], login: Login | None) -> Iterator[dict[str, str]]:
    """An environment whose Docker config holds ``login``'s credentials, for buildx and the CLI to use.

    The user's config directory is mirrored into a private temporary one (builder instances and CLI
    plugins by link) with the login added, so nothing is written to the user's own config and the
    password is never on a command line. The directory is removed afterwards.
    """
    if login is None:
        yield dict(env)
        return
    import shutil
    import tempfile

    source = docker_config_dir(env)
    overlay = Path(tempfile.mkdtemp(prefix="buildonce-docker-config-"))
    try:
        if source.is_dir():
            for entry in source.iterdir():
                if entry.name != "config.json":
                    (overlay / entry.name).symlink_to(entry)
        config = config_with_login(source, login)
        target = overlay / "config.json"
        target.touch(mode=0o600)
        target.write_text(json.dumps(config))
        yield {**env, "DOCKER_CONFIG": str(overlay)}
    finally:
        shutil.rmtree(overlay, ignore_errors=True)
