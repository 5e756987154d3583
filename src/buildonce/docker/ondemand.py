"""The engine, connected when first asked: a run that ends without building or loading (an image reused or
promoted in the registry alone) never pays for the SDK's import and the engine's connection."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from buildonce.docker.config import Login
    from buildonce.docker.engine import Engine, LocalImage
    from buildonce.references import ImageName, Reference


class EngineOnDemand:
    """``commands.seams.EngineAPI`` over an ``Engine`` made at the first call that needs one."""

    def __init__(self, env: Mapping[str, str], login: Login | None = None) -> None:
        self._env = dict(env)
        self._login = login
        """Given to the engine as soon as it is connected, before anything else is asked of it."""
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def connect(self) -> Engine:
        with self._lock:
            if self._engine is None:
                from buildonce.docker.engine import Engine

                engine = Engine.connect(self._env)
                if self._login is not None:
                    try:
                        engine.login(self._login)
                    except BaseException:
                        engine.close()
                        raise
                self._engine = engine
            return self._engine

    @property
    def containerd_store(self) -> bool:
        return self.connect().containerd_store

    @property
    def platform(self) -> str:
        return self.connect().platform

    def login(self, login: Login) -> None:
        self.connect().login(login)

    def push(self, reference: Reference, timeout: float) -> str:
        return self.connect().push(reference, timeout)

    def pull(self, image: ImageName, digest: str, timeout: float, *, platform: str = "") -> None:
        self.connect().pull(image, digest, timeout, platform=platform)

    def inspect(self, reference: str) -> LocalImage | None:
        return self.connect().inspect(reference)

    def tag(self, source: str, reference: Reference) -> None:
        self.connect().tag(source, reference)

    def save(self, references: Iterable[str], chunk_size: int) -> Iterator[bytes]:
        return self.connect().save(references, chunk_size)

    def load(self, data: Iterable[bytes]) -> list[str]:
        return self.connect().load(data)

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.close()
