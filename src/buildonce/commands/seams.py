"""What the commands need of the engine and of the registry, as Protocols.

``buildonce.docker.engine.Engine`` (and, for consume's pulls, ``buildonce.docker.cli.CliPuller``) and
``buildonce.registry.client.Registry`` are the real ones; the unit tests hand the commands fakes, so that
their decisions are tested without an engine or a registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from buildonce.docker.config import Login
    from buildonce.docker.engine import LocalImage
    from buildonce.oci import Manifest
    from buildonce.references import ImageName, Reference


class RegistryAPI(Protocol):
    def resolve(self, image: ImageName, reference: str) -> str | None: ...

    def get_manifest(self, image: ImageName, reference: str) -> Manifest | None: ...

    def labels(self, image: ImageName, reference: str) -> dict[str, str] | None: ...

    def put_manifest(self, image: ImageName, tag: str, manifest: Manifest) -> str: ...

    def copy_image(self, source: ImageName, digest: str, target: ImageName) -> None: ...

    def push_layout(self, layout: Path, references: Sequence[Reference]) -> str: ...

    def close(self) -> None: ...


class PullAPI(Protocol):
    """What consume's registry path needs of the engine: ``buildonce.docker.cli.CliPuller``, or an engine."""

    def pull(self, image: ImageName, digest: str, timeout: float, *, platform: str = "") -> None: ...

    def tag(self, source: str, reference: Reference) -> None: ...


class EngineAPI(Protocol):
    @property
    def containerd_store(self) -> bool: ...

    @property
    def platform(self) -> str: ...

    def login(self, login: Login) -> None: ...

    def push(self, reference: Reference, timeout: float) -> str: ...

    def pull(self, image: ImageName, digest: str, timeout: float, *, platform: str = "") -> None: ...

    def inspect(self, reference: str) -> LocalImage | None: ...

    def tag(self, source: str, reference: Reference) -> None: ...

    def save(self, references: Iterable[str], chunk_size: int) -> Iterator[bytes]: ...

    def load(self, data: Iterable[bytes]) -> list[str]: ...

    def close(self) -> None: ...
