"""verify's decisions, against an engine and a registry in memory: where the labels come from, and when the
image is refused."""

from __future__ import annotations

import pytest
from fakes import IMAGE, OTHER, SHA, FakeEngine, FakeRegistry, manifest_for

from buildonce.commands.verify import find_labels
from buildonce.docker.engine import LocalImage
from buildonce.errors import EngineError, RegistryError, VerificationError
from buildonce.labels import REVISION, Keys, check_fresh
from buildonce.references import ImageName
from buildonce.retry import RetryPolicy

POLICY = RetryPolicy(attempts=2, wait_seconds=0, sleep=lambda _: None)


def test_the_registry_answers_first() -> None:
    registry = FakeRegistry()
    built = manifest_for(SHA)
    registry.tags[(IMAGE, "v1")] = registry.store(built, SHA)

    def no_engine() -> FakeEngine:
        raise AssertionError("the engine is not asked when the registry answers")

    labels, resolved, source = find_labels(registry, no_engine, POLICY, ImageName(IMAGE), "v1", reference=f"{IMAGE}:v1")
    assert (labels, resolved, source) == ({REVISION: SHA}, built.digest, "registry")


def test_an_image_only_in_the_engine_is_read_there() -> None:
    registry = FakeRegistry()
    engine = FakeEngine(registry)
    engine.local[f"{IMAGE}:v1"] = LocalImage("sha256:" + "1" * 64, {REVISION: OTHER}, 10)
    labels, resolved, source = find_labels(
        registry, lambda: engine, POLICY, ImageName(IMAGE), "v1", reference=f"{IMAGE}:v1"
    )
    assert (resolved, source) == ("sha256:" + "1" * 64, "local")
    with pytest.raises(VerificationError, match=f"built from commit {OTHER}"):
        check_fresh(f"{IMAGE}:v1", labels, SHA, Keys())


def test_a_registry_fault_with_no_engine_reports_the_registry_fault() -> None:
    registry = FakeRegistry(failures=5)

    def no_engine() -> FakeEngine:
        raise EngineError("no engine")

    with pytest.raises(RegistryError, match="still failing after 2 attempts"):
        find_labels(registry, no_engine, POLICY, ImageName(IMAGE), "v1", reference=f"{IMAGE}:v1")


def test_an_image_in_neither_place_is_refused() -> None:
    registry = FakeRegistry()
    engine = FakeEngine(registry)
    with pytest.raises(VerificationError, match="neither in the registry nor in the local engine"):
        find_labels(registry, lambda: engine, POLICY, ImageName(IMAGE), "v1", reference=f"{IMAGE}:v1")
