"""The build job's push decisions, against a fake engine and registry: what is pushed, and when a run fails."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import cast

import pytest
from events import payload, runner_env

from buildonce.commands.build import BuildJob
from buildonce.docker.buildx import BuildOutcome, Output
from buildonce.docker.engine import Engine
from buildonce.errors import ImmutableTagError, RegistryError, VerificationError
from buildonce.github.context import build_context
from buildonce.github.workflow import Console, Inputs
from buildonce.labels import REVISION, Keys
from buildonce.oci import Manifest
from buildonce.options import build_options
from buildonce.plan import make_plan
from buildonce.references import ImageName, Reference
from buildonce.registry.client import Registry
from buildonce.retry import RetryPolicy

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER = "f" * 40
IMAGE = "registry.test/acme/widget"


def manifest_for(sha: str, config: str = "sha256:" + "c" * 64) -> Manifest:
    raw = json.dumps(
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"digest": config}, "x": sha}
    )
    return Manifest.from_bytes(raw.encode(), "application/vnd.oci.image.manifest.v1+json")


@dataclass
class FakeRegistry:
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)
    puts: list[str] = field(default_factory=list)
    failures: int = 0

    def store(self, manifest: Manifest, sha: str) -> str:
        self.manifests[manifest.digest] = manifest
        self.commits[manifest.digest] = sha
        return manifest.digest

    def resolve(self, image: ImageName, reference: str) -> str | None:
        if self.failures:
            self.failures -= 1
            raise RegistryError("503", transient=True)
        return reference if reference in self.manifests else self.tags.get((image.name, reference))

    def get_manifest(self, image: ImageName, reference: str) -> Manifest | None:
        digest = self.resolve(image, reference)
        return self.manifests.get(digest) if digest else None

    def labels(self, image: ImageName, reference: str) -> dict[str, str] | None:
        digest = self.resolve(image, reference)
        return {REVISION: self.commits[digest]} if digest in self.commits else None

    def put_manifest(self, image: ImageName, tag: str, manifest: Manifest) -> str:
        self.puts.append(tag)
        self.tags[(image.name, tag)] = manifest.digest
        return manifest.digest

    def close(self) -> None:
        pass


@dataclass
class FakeEngine:
    registry: FakeRegistry
    names: dict[str, tuple[Manifest, str]] = field(default_factory=dict)
    """What each local name holds when it is pushed: a manifest and the commit it was built from."""
    pushed: list[str] = field(default_factory=list)
    containerd_store: bool = True

    def push(self, reference: Reference, timeout: float) -> str:
        self.pushed.append(str(reference))
        manifest, sha = self.names[str(reference)]
        digest = self.registry.store(manifest, sha)
        self.registry.tags[(reference.image.name, reference.tag)] = digest
        return digest

    def inspect(self, reference: str) -> None:
        return None

    def close(self) -> None:
        pass


def job(registry: FakeRegistry, engine: FakeEngine, **inputs: str) -> BuildJob:
    options = build_options(Inputs({}, {"images": IMAGE, "load": "false", "artifact": "false", **inputs}))
    data = payload("push-default")
    context = build_context(runner_env("push-default"), data)
    plan = make_plan(context, options.plan, now=datetime(2030, 1, 1, tzinfo=timezone.utc))
    policy = RetryPolicy(attempts=3, wait_seconds=0, sleep=lambda _: None)
    return BuildJob(
        plan,
        options,
        Console(io.StringIO()),
        cast(Engine, engine),
        cast(Registry, registry),
        policy,
        Keys(options.plan.label_namespace),
    )


def outcome(digest: str) -> BuildOutcome:
    return BuildOutcome(metadata={"containerimage.digest": digest}, imageid="", seconds=1.0)


def test_the_engine_pushes_only_the_immutable_name_and_the_registry_tags_the_rest(tmp_path: Path) -> None:
    registry = FakeRegistry()
    engine = FakeEngine(registry)
    built = manifest_for(SHA)
    engine.names[f"{IMAGE}:sha-0123456"] = (built, SHA)
    # A build of another commit on the same engine has re-pointed the mutable name.
    engine.names[f"{IMAGE}:latest"] = (manifest_for(OTHER), OTHER)
    report = job(registry, engine).push(Output.ENGINE, outcome(built.digest), tmp_path)
    assert engine.pushed == [f"{IMAGE}:sha-0123456"]
    assert registry.puts == ["latest"]
    assert report.digest == built.digest
    assert registry.tags[(IMAGE, "latest")] == built.digest


def test_an_image_pushed_that_is_not_the_one_built_fails_the_run(tmp_path: Path) -> None:
    registry = FakeRegistry()
    engine = FakeEngine(registry)
    engine.names[f"{IMAGE}:sha-0123456"] = (manifest_for(OTHER), OTHER)
    with pytest.raises(VerificationError, match="not the image this build made"):
        job(registry, engine).push(Output.ENGINE, outcome(manifest_for(SHA).digest), tmp_path)
    assert registry.puts == []


def test_a_twin_build_of_the_same_commit_that_pushed_first_is_reported(tmp_path: Path) -> None:
    registry = FakeRegistry()
    engine = FakeEngine(registry)
    twin = manifest_for(SHA, config="sha256:" + "d" * 64)
    engine.names[f"{IMAGE}:sha-0123456"] = (twin, SHA)
    report = job(registry, engine).push(Output.ENGINE, outcome(manifest_for(SHA).digest), tmp_path)
    assert report.digest == twin.digest
    assert report.reused
    assert registry.tags[(IMAGE, "latest")] == twin.digest


def test_a_tag_taken_by_another_commit_while_building_is_refused_before_pushing(tmp_path: Path) -> None:
    registry = FakeRegistry()
    registry.tags[(IMAGE, "sha-0123456")] = registry.store(manifest_for(OTHER), OTHER)
    engine = FakeEngine(registry)
    with pytest.raises(ImmutableTagError):
        job(registry, engine).push(Output.ENGINE, outcome(manifest_for(SHA).digest), tmp_path)
    assert engine.pushed == []


def test_attempts_is_the_most_any_registry_operation_needed(tmp_path: Path) -> None:
    registry = FakeRegistry(failures=2)
    engine = FakeEngine(registry)
    built = manifest_for(SHA)
    engine.names[f"{IMAGE}:sha-0123456"] = (built, SHA)
    report = job(registry, engine).push(Output.ENGINE, outcome(built.digest), tmp_path)
    assert report.attempts == 3


def test_a_mutable_tag_moved_on_by_a_newer_commit_is_reported_not_failed() -> None:
    registry = FakeRegistry()
    built = manifest_for(SHA)
    registry.tags[(IMAGE, "sha-0123456")] = registry.store(built, SHA)
    registry.tags[(IMAGE, "latest")] = registry.store(manifest_for(OTHER), OTHER)
    console_stream = io.StringIO()
    build_job = job(registry, FakeEngine(registry))
    build_job.publisher.console = Console(console_stream)
    build_job.publisher.verify(built.digest)
    assert "was moved on to" in console_stream.getvalue()
    registry.tags[(IMAGE, "sha-0123456")] = registry.tags[(IMAGE, "latest")]
    with pytest.raises(VerificationError):
        build_job.publisher.verify(built.digest)


def test_an_unreadable_image_under_a_tag_is_retried_not_taken_for_unlabelled() -> None:
    registry = FakeRegistry()
    registry.tags[(IMAGE, "sha-0123456")] = "sha256:" + "9" * 64  # resolves, but nothing reads yet
    with pytest.raises(RegistryError, match="cannot be read"):
        job(registry, FakeEngine(registry)).check_immutable_tags()
