"""The merge's decisions against a registry in memory: what it checks before writing, what it writes, in which
order, and what a second merge writes (nothing)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pytest
from events import payload, runner_env
from fakes import IMAGE, OTHER, SHA, FakeRegistry

from buildonce.commands.merge import Merger
from buildonce.commands.publish import Publisher
from buildonce.errors import ImmutableTagError, RegistryError, VerificationError
from buildonce.github.context import build_context
from buildonce.github.workflow import Console, Inputs
from buildonce.labels import REVISION, Keys
from buildonce.legs import Leg, plan_merge
from buildonce.oci import OCI_MANIFEST, Manifest
from buildonce.options import merge_options
from buildonce.plan import Plan, make_plan
from buildonce.references import ImageName
from buildonce.retry import RetryPolicy

PLATFORMS = ("linux/amd64", "linux/arm64")


@dataclass
class LegRegistry(FakeRegistry):
    """The fake registry, with image configs, and manifests that stay invisible for a number of look-ups."""

    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    hidden: dict[str, int] = field(default_factory=dict)

    def resolve(self, image: ImageName, reference: str) -> str | None:
        if self.hidden.get(reference):
            self.hidden[reference] -= 1
            return None
        return super().resolve(image, reference)

    def put_manifest(self, image: ImageName, tag: str, manifest: Manifest) -> str:
        # As a registry does: the manifest is then served by its digest too.
        self.manifests[manifest.digest] = manifest
        self.held.add((image.name, manifest.digest))
        return super().put_manifest(image, tag, manifest)

    def labels(self, image: ImageName, reference: str) -> dict[str, str] | None:
        # An index's labels are its first image's, as the real client reads them.
        digest = self.resolve(image, reference)
        manifest = self.manifests.get(digest) if digest else None
        if manifest is not None and manifest.is_index:
            first = manifest.json()["manifests"][0]["digest"]
            return dict(self.configs[first]["config"]["Labels"])
        return super().labels(image, reference)

    def image_config(self, image: ImageName, reference: str, platform: str | None = None) -> dict[str, Any] | None:
        return self.configs.get(reference) if self.resolve(image, reference) else None


def pushed_leg(registry: LegRegistry, platform: str, *, arch: str | None = None, sha: str = SHA) -> Leg:
    """A leg's manifest, as its leg pushed it by digest (no tag), with a config of ``arch``."""
    os_name, architecture = platform.split("/")
    raw = json.dumps({"mediaType": OCI_MANIFEST, "config": {"digest": "sha256:" + "c" * 64}, "p": platform, "s": sha})
    manifest = Manifest.from_bytes(raw.encode(), OCI_MANIFEST)
    registry.store(manifest, sha)
    registry.held.add((IMAGE, manifest.digest))
    registry.configs[manifest.digest] = {
        "os": os_name,
        "architecture": arch or architecture,
        "config": {"Labels": {REVISION: sha, "org.opencontainers.image.created": "2026-03-04T09:20:30Z"}},
    }
    descriptor = {
        "mediaType": OCI_MANIFEST,
        "digest": manifest.digest,
        "size": len(raw),
        "platform": {"os": os_name, "architecture": architecture},
    }
    return Leg(platform, SHA, "sha-0123456", descriptor)


def merger(registry: LegRegistry) -> tuple[Merger, Plan, io.StringIO]:
    options = merge_options(Inputs({}, {"images": IMAGE, "platforms": ",".join(PLATFORMS)}))
    context = build_context(runner_env("push-default"), payload("push-default"))
    plan = make_plan(context, options.plan, now=datetime(2030, 1, 1, tzinfo=timezone.utc))
    stream = io.StringIO()
    console = Console(stream)
    policy = RetryPolicy(attempts=3, wait_seconds=0, sleep=lambda _: None)
    publisher = Publisher.for_plan(plan, console, registry, policy, Keys())
    return Merger(plan, console, registry, policy, Keys(), publisher), plan, stream


def test_the_index_goes_in_by_digest_then_under_the_immutable_tag_then_the_others() -> None:
    registry = LegRegistry()
    legs = [pushed_leg(registry, platform) for platform in PLATFORMS]
    step, plan, stream = merger(registry)
    report = step.merge(plan_merge(legs, plan.platforms, SHA, plan.immutable_tag))
    assert registry.puts == [report.digest, "sha-0123456", "latest"]
    assert report.reused is False
    assert report.platform_digests == {leg.platform: leg.digest for leg in legs}
    index = registry.manifests[report.digest].json()
    assert [entry["digest"] for entry in index["manifests"]] == [leg.digest for leg in legs]
    assert index["annotations"]["org.opencontainers.image.revision"] == SHA
    assert report.outputs()["platform-digests"] == json.dumps(report.platform_digests, separators=(",", ":"))
    assert "Verified in the registry: 2 manifest(s)" in stream.getvalue()


def test_a_second_merge_writes_nothing_and_reports_the_same_index() -> None:
    registry = LegRegistry()
    legs = [pushed_leg(registry, platform) for platform in PLATFORMS]
    first, plan, _ = merger(registry)
    done = first.merge(plan_merge(legs, plan.platforms, SHA, plan.immutable_tag))
    registry.puts.clear()
    again, _, stream = merger(registry)
    report = again.merge(plan_merge(legs[::-1], plan.platforms, SHA, plan.immutable_tag))
    assert report.digest == done.digest
    assert report.reused is True
    assert registry.puts == []
    assert "this very index" in stream.getvalue()


def test_a_leg_whose_config_is_another_architecture_is_refused_before_anything_is_written() -> None:
    registry = LegRegistry()
    legs = [pushed_leg(registry, "linux/amd64"), pushed_leg(registry, "linux/arm64", arch="amd64")]
    step, plan, _ = merger(registry)
    with pytest.raises(VerificationError, match="config says linux/amd64"):
        step.merge(plan_merge(legs, plan.platforms, SHA, plan.immutable_tag))
    assert registry.puts == []


def test_a_leg_whose_image_names_another_commit_is_refused_before_anything_is_written() -> None:
    registry = LegRegistry()
    legs = [pushed_leg(registry, "linux/amd64"), pushed_leg(registry, "linux/arm64", sha=OTHER)]
    step, plan, _ = merger(registry)
    with pytest.raises(VerificationError, match=f"built from {OTHER}"):
        step.merge(plan_merge(legs, plan.platforms, SHA, plan.immutable_tag))
    assert registry.puts == []


def test_a_child_not_yet_visible_is_looked_up_again() -> None:
    registry = LegRegistry()
    legs = [pushed_leg(registry, platform) for platform in PLATFORMS]
    registry.hidden[legs[1].digest] = 2
    step, plan, _ = merger(registry)
    report = step.merge(plan_merge(legs, plan.platforms, SHA, plan.immutable_tag))
    assert registry.hidden[legs[1].digest] == 0
    assert report.digest in registry.manifests


def test_a_child_that_never_appears_fails_with_its_platform_and_nothing_is_written() -> None:
    registry = LegRegistry()
    legs = [pushed_leg(registry, platform) for platform in PLATFORMS]
    registry.hidden[legs[1].digest] = 100
    step, plan, _ = merger(registry)
    with pytest.raises(RegistryError, match="of the linux/arm64 leg"):
        step.merge(plan_merge(legs, plan.platforms, SHA, plan.immutable_tag))
    assert registry.puts == []


def test_an_immutable_tag_holding_another_commits_image_refuses_the_merge() -> None:
    registry = LegRegistry()
    legs = [pushed_leg(registry, platform) for platform in PLATFORMS]
    other = pushed_leg(registry, "linux/amd64", sha=OTHER)
    registry.tags[(IMAGE, "sha-0123456")] = other.digest
    step, plan, _ = merger(registry)
    with pytest.raises(ImmutableTagError, match="allow-overwrite"):
        step.merge(plan_merge(legs, plan.platforms, SHA, plan.immutable_tag))
    assert registry.puts == []
