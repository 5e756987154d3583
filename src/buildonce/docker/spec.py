"""What a build is made of, as buildx is told it: value types only, so that the input parser can make them
without loading the buildx adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Secret:
    id: str
    value: str = ""
    src: str = ""
    env: str = ""


class BuildSpec(Protocol):
    """What the build command is made of, as the inputs give it (``options.BuildOptions`` is one)."""

    @property
    def context(self) -> str: ...
    @property
    def file(self) -> str: ...
    @property
    def build_args(self) -> tuple[str, ...]: ...
    @property
    def target(self) -> str: ...
    @property
    def cache_from(self) -> tuple[str, ...]: ...
    @property
    def cache_to(self) -> tuple[str, ...]: ...
    @property
    def builder(self) -> str: ...
    @property
    def provenance(self) -> str: ...
    @property
    def sbom(self) -> str: ...
    @property
    def secrets(self) -> tuple[Secret, ...]: ...
    @property
    def no_cache(self) -> bool: ...
    @property
    def pull(self) -> bool: ...
    @property
    def network(self) -> str: ...
