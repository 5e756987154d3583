"""The Docker engine, through the Docker SDK: push, pull, inspect, save and load images.

Each push is one attempt with a deadline; the retry policy decides whether to try again. Errors the
engine streams back are sorted into transient registry faults and permanent ones, with a hint at what
to fix. The SDK (and ``requests`` under it) is imported here only, and only by the build and consume
commands.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker.utils import kwargs_from_env

from buildonce.docker.config import Login, normalize_registry
from buildonce.docker.messages import START_THE_ENGINE, classify_push_error, settle_tag
from buildonce.errors import EngineError, RegistryError
from buildonce.references import DIGEST_PATTERN, ImageName, Reference

# A cut or hung stream surfaces as requests' errors or, mid-body, as urllib3's own.
_CONNECTION_ERRORS = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError)
_LOADED = ("Loaded image: ", "Loaded image ID: ")
_DIGEST_IN_STATUS = re.compile(r"digest: (sha256:[0-9a-f]{64})")


@dataclass(frozen=True)
class LocalImage:
    id: str
    labels: dict[str, str]
    size: int
    facts: dict[str, Any] = field(default_factory=dict)
    """The engine's view of the image config (os, architecture, created, diff ids, labels, env, cmd,
    entrypoint), in the terms of ``buildonce.tarimage.loaded_matches``."""


class Engine:
    """One connection to the Docker engine; push attempts get connections of their own."""

    def __init__(self, client: docker.APIClient, env: Mapping[str, str]) -> None:
        self.client = client
        self._env = dict(env)
        self._auth: dict[str, dict[str, str]] = {}

    @classmethod
    def connect(cls, env: Mapping[str, str], timeout: float = 120) -> Engine:
        try:
            client = docker.APIClient(timeout=int(timeout), **kwargs_from_env(environment=dict(env)))
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineError(f"cannot reach the Docker engine ({exc}). {START_THE_ENGINE}") from None
        return cls(client, env)

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.client.info()
        return info

    @functools.cached_property
    def containerd_store(self) -> bool:
        """Whether images live in containerd's store, where a multi-platform image can be loaded and pushed."""
        status = self.info().get("DriverStatus") or []
        return any(len(pair) == 2 and pair[1] == "io.containerd.snapshotter.v1" for pair in status)

    @functools.cached_property
    def platform(self) -> str:
        """The engine's own ``os/arch``, as Go names them: the image of an index it runs."""
        try:
            version = self.client.version()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineError(f"cannot ask the Docker engine for its platform ({exc})") from None
        return f"{version.get('Os') or 'linux'}/{version.get('Arch') or 'amd64'}"

    def login(self, login: Login) -> None:
        """Check the credentials with the registry now, so that a wrong password fails before the build."""
        registry = login.registry
        try:
            self.client.login(username=login.username, password=login.password, registry=registry, reauth=True)
        except docker.errors.APIError as exc:
            raise RegistryError(
                f"login to {registry} as {login.username} failed ({exc.explanation or exc.status_code}). "
                "Check the username and password inputs (a token needs write access to push)."
            ) from None
        self._auth[normalize_registry(registry)] = {"username": login.username, "password": login.password}

    def _auth_for(self, image: ImageName) -> dict[str, str] | None:
        return self._auth.get(normalize_registry(image.registry))

    def _attempt_client(self, timeout: float) -> docker.APIClient:
        kwargs = kwargs_from_env(environment=self._env)
        return docker.APIClient(version=self.client.api_version, timeout=max(1, int(timeout)), **kwargs)

    def push(self, reference: Reference, timeout: float) -> str:
        """Push one reference, once; return the digest the engine reports. Raises RegistryError."""
        client = self._attempt_client(timeout)
        deadline = time.monotonic() + timeout
        digest = ""
        try:
            stream = client.push(
                reference.image.name,
                tag=reference.tag,
                stream=True,
                decode=True,
                auth_config=self._auth_for(reference.image),
            )
            for message in _until(stream, deadline):
                if "error" in message or "errorDetail" in message:
                    detail = message.get("errorDetail") or {}
                    raise classify_push_error(str(reference), str(detail.get("message") or message.get("error")))
                digest = _digest_of(message) or digest
        except docker.errors.APIError as exc:
            raise classify_push_error(str(reference), str(exc.explanation or exc)) from None
        except _CONNECTION_ERRORS as exc:
            raise RegistryError(
                f"pushing {reference}: the push did not finish within {timeout:.0f} s or the connection "
                f"to the engine broke ({type(exc).__name__})",
                transient=True,
            ) from None
        finally:
            client.close()
        if not digest:
            raise RegistryError(f"pushing {reference}: the engine reported no digest", transient=True)
        return digest

    def pull(self, image: ImageName, digest: str, timeout: float, *, platform: str = "") -> None:
        """Pull ``name@digest`` (of ``platform``, when given, else the engine's own), once. Raises RegistryError."""
        client = self._attempt_client(timeout)
        deadline = time.monotonic() + timeout
        reference = image.with_digest(digest)
        try:
            stream = client.pull(
                image.name,
                tag=digest,
                stream=True,
                decode=True,
                auth_config=self._auth_for(image),
                platform=platform or None,
            )
            for message in _until(stream, deadline):
                if "error" in message or "errorDetail" in message:
                    detail = message.get("errorDetail") or {}
                    text = str(detail.get("message") or message.get("error"))
                    raise classify_push_error(reference, text, "pulling")
        except docker.errors.APIError as exc:
            raise classify_push_error(reference, str(exc.explanation or exc), "pulling") from None
        except _CONNECTION_ERRORS as exc:
            raise RegistryError(
                f"pulling {reference}: no answer within {timeout:.0f} s ({type(exc).__name__})",
                transient=True,
            ) from None
        finally:
            client.close()

    def inspect(self, reference: str) -> LocalImage | None:
        try:
            data = self.client.inspect_image(reference)  # type: ignore[no-untyped-call]
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            raise EngineError(f"inspecting {reference}: {exc.explanation or exc}") from None
        config = data.get("Config") or {}
        rootfs = data.get("RootFS") or {}
        facts = {
            "os": data.get("Os") or "",
            "architecture": data.get("Architecture") or "",
            "created": data.get("Created") or "",
            "diff_ids": list(rootfs.get("Layers") or []),
            "labels": dict(config.get("Labels") or {}),
            "env": list(config.get("Env") or []),
            "cmd": list(config.get("Cmd") or []),
            "entrypoint": list(config.get("Entrypoint") or []),
        }
        return LocalImage(
            id=str(data.get("Id", "")),
            labels=dict(config.get("Labels") or {}),
            size=int(data.get("Size") or 0),
            facts=facts,
        )

    def tag(self, source: str, reference: Reference) -> None:
        settle_tag(lambda: self._try_tag(source, reference), source, str(reference))

    def _try_tag(self, source: str, reference: Reference) -> str | None:
        """None when tagged, else the engine's complaint."""
        try:
            self.client.tag(source, reference.image.name, reference.tag)
        except docker.errors.APIError as exc:
            return str(exc.explanation or exc)
        return None

    def save(self, references: Iterable[str], chunk_size: int) -> Iterator[bytes]:
        """Stream ``docker save`` of the references, ``chunk_size`` bytes at a time."""
        names = list(references)
        # The SDK's get_image saves one name; the engine's /images/get takes several, so that every tag
        # lands in one tar (and each layer only once).
        api: Any = self.client
        try:
            response = api._get(api._url("/images/get"), params={"names": names}, stream=True)
            api._raise_for_status(response)
        except docker.errors.APIError as exc:
            raise EngineError(f"saving {', '.join(names)}: {exc.explanation or exc}") from None
        try:
            yield from response.iter_content(chunk_size=chunk_size)
        finally:
            response.close()

    def load(self, data: Iterable[bytes]) -> list[str]:
        """``docker load`` from a stream of bytes; return the names (or ids) the engine loaded."""
        loaded: list[str] = []
        try:
            for message in self.client.load_image(data):  # type: ignore[no-untyped-call]
                if "error" in message or "errorDetail" in message:
                    detail = message.get("errorDetail") or {}
                    raise EngineError(f"docker load failed: {detail.get('message') or message.get('error')}")
                stream = str(message.get("stream", ""))
                loaded += [stream.removeprefix(p).strip() for p in _LOADED if stream.startswith(p)]
        except docker.errors.APIError as exc:
            raise EngineError(f"docker load failed: {exc.explanation or exc}") from None
        return loaded

    def close(self) -> None:
        self.client.close()


def _digest_of(message: Mapping[str, Any]) -> str:
    aux = message.get("aux")
    if isinstance(aux, dict) and isinstance(aux.get("Digest"), str) and DIGEST_PATTERN.fullmatch(aux["Digest"]):
        return str(aux["Digest"])
    match = _DIGEST_IN_STATUS.search(str(message.get("status", "")))
    return match.group(1) if match else ""


def _until(stream: Iterable[dict[str, Any]], deadline: float) -> Iterator[dict[str, Any]]:
    """Yield stream messages until the deadline.

    The attempt's client has a socket timeout as long as the attempt, which cuts a silent stream (a hung
    registry); this cuts one that trickles on past the deadline. Closing the attempt's connection makes
    the engine cancel the push.
    """
    for message in stream:
        if time.monotonic() > deadline:
            raise TimeoutError("deadline passed")
        yield message
