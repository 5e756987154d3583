"""The publishing step's decisions, against a registry in memory: which tags it refuses, reuses, copies, tags."""

from __future__ import annotations

import io
import threading
from datetime import datetime, timezone

import pytest
from events import payload, runner_env
from fakes import IMAGE, OTHER, SHA, FakeRegistry, manifest_for

from buildonce.commands.publish import Existing, Published, Publisher, TwinPushedError, commit_of
from buildonce.errors import ImmutableTagError, VerificationError
from buildonce.github.context import build_context
from buildonce.github.workflow import Console, Inputs
from buildonce.labels import REVISION, Keys
from buildonce.options import build_options
from buildonce.plan import make_plan
from buildonce.references import ImageName
from buildonce.retry import RetryPolicy
from buildonce.tags import Kind, Subject

MIRROR = "registry.test/acme/mirror"


def publisher(registry: FakeRegistry, *, images: str = IMAGE, **inputs: str) -> tuple[Publisher, io.StringIO]:
    options = build_options(Inputs({}, {"images": images, "load": "false", "artifact": "false", **inputs}))
    context = build_context(runner_env("push-default"), payload("push-default"))
    plan = make_plan(context, options.plan, now=datetime(2030, 1, 1, tzinfo=timezone.utc))
    stream = io.StringIO()
    policy = RetryPolicy(attempts=3, wait_seconds=0, sleep=lambda _: None)
    made = Publisher.for_plan(
        plan,
        Console(stream),
        registry,
        policy,
        Keys(),
        allow_overwrite=options.allow_overwrite,
        rebuild=options.rebuild,
    )
    return made, stream


def test_a_digest_is_put_under_every_reference_and_verified() -> None:
    registry = FakeRegistry()
    built = manifest_for(SHA)
    registry.tags[(IMAGE, "sha-0123456")] = registry.store(built, SHA)
    step, stream = publisher(registry)
    # The tag check finds this commit's image: it is returned for the caller to reuse.
    assert step.publish(built.digest) == Existing(built.digest, {REVISION: SHA})
    step.rebuild = True
    published = step.publish(built.digest)
    assert isinstance(published, Published)
    assert published.digest == built.digest
    assert registry.puts == ["latest"]
    assert "Verified in the registry: 2 reference(s)" in stream.getvalue()


def test_a_repository_that_lacks_the_image_gets_a_copy_before_its_tags() -> None:
    registry = FakeRegistry()
    built = manifest_for(SHA)
    registry.tags[(IMAGE, "sha-0123456")] = registry.store(built, SHA)
    step, _ = publisher(registry, images=f"{IMAGE}\n{MIRROR}", rebuild="true")
    assert isinstance(step.publish(built.digest), Published)
    assert registry.copies == [(IMAGE, MIRROR)]
    assert sorted(registry.puts) == ["latest", "latest", "sha-0123456"]
    assert registry.tags[(MIRROR, "sha-0123456")] == built.digest


def test_a_digest_in_no_repository_is_refused() -> None:
    registry = FakeRegistry()
    step, _ = publisher(registry)
    with pytest.raises(VerificationError, match="in none of the repositories"):
        step.publish(manifest_for(SHA).digest)
    assert registry.puts == []


def test_an_upload_runs_only_when_no_image_of_this_commit_is_there() -> None:
    registry = FakeRegistry()
    built = manifest_for(SHA)
    step, _ = publisher(registry)
    uploads: list[str] = []

    def upload() -> str:
        uploads.append("push")
        digest = registry.store(built, SHA)
        for ref in step.references:
            registry.put_manifest(ref.image, ref.tag, built)
        return digest

    published = step.publish(upload)
    assert isinstance(published, Published)
    assert published.digest == built.digest
    assert uploads == ["push"]
    # Published again: the tags now hold this commit's image, so nothing is uploaded twice.
    assert isinstance(step.publish(upload), Existing)
    assert uploads == ["push"]


def test_an_upload_that_met_a_twin_reports_the_twin() -> None:
    registry = FakeRegistry()
    twin = Existing(manifest_for(SHA).digest, {REVISION: SHA})
    step, _ = publisher(registry)

    def upload() -> str:
        raise TwinPushedError(twin)

    assert step.publish(upload) is twin


def test_an_immutable_tag_of_another_commit_is_refused_unless_overwrite_is_allowed() -> None:
    registry = FakeRegistry()
    registry.tags[(IMAGE, "sha-0123456")] = registry.store(manifest_for(OTHER), OTHER)
    step, _ = publisher(registry)
    with pytest.raises(ImmutableTagError, match=f"built from {OTHER}"):
        step.publish(manifest_for(SHA).digest)
    allowed, stream = publisher(registry, **{"allow-overwrite": "true"})
    assert allowed.check_immutable_tags() is None
    assert "overwriting it" in stream.getvalue()


def test_an_image_without_a_revision_label_is_another_commits() -> None:
    registry = FakeRegistry()
    unlabelled = manifest_for("")
    registry.tags[(IMAGE, "sha-0123456")] = registry.store(unlabelled, "")
    registry.commits[unlabelled.digest] = ""
    step, _ = publisher(registry)
    with pytest.raises(ImmutableTagError, match="unknown commit"):
        step.check_immutable_tags()


def test_two_images_of_this_commit_under_its_immutable_tags_move_neither() -> None:
    registry = FakeRegistry()
    registry.tags[(IMAGE, "sha-0123456")] = registry.store(manifest_for(SHA), SHA)
    registry.tags[(MIRROR, "sha-0123456")] = registry.store(manifest_for(SHA, "sha256:" + "e" * 64), SHA)
    step, _ = publisher(registry, images=f"{IMAGE}\n{MIRROR}")
    with pytest.raises(ImmutableTagError, match="hold different images"):
        step.check_immutable_tags()


def test_a_pull_requests_image_is_known_by_its_head_commit() -> None:
    labels = {REVISION: "merge" * 8, Keys().pr_head_sha: SHA}
    head = Subject(kind=Kind.PULL_REQUEST, sha=SHA, revision="", ref_name="", pr_number=7, pr_head_sha=SHA)
    merge = Subject(kind=Kind.PULL_REQUEST, sha="merge" * 8, revision="", ref_name="", pr_number=7, pr_head_sha=SHA)
    assert commit_of(head, labels, Keys()) == SHA
    assert commit_of(merge, labels, Keys()) == "merge" * 8


class MeetingRegistry(FakeRegistry):
    """A registry whose look-ups of a tag each wait (boundedly) until every expected one has arrived."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.arrived = threading.Barrier(expected, timeout=10)
        self.together: list[bool] = []

    def resolve(self, image: ImageName, reference: str) -> str | None:
        if reference == "sha-0123456":
            try:
                self.arrived.wait()
                self.together.append(True)
            except threading.BrokenBarrierError:
                self.together.append(False)
        return super().resolve(image, reference)


def test_the_immutable_tags_of_every_repository_are_looked_up_at_once() -> None:
    registry = MeetingRegistry(expected=2)
    built = manifest_for(SHA)
    registry.tags[(MIRROR, "sha-0123456")] = registry.store(built, SHA)
    step, _ = publisher(registry, images=f"{IMAGE}\n{MIRROR}")
    assert step.check_immutable_tags() == Existing(built.digest, {REVISION: SHA})
    assert registry.together == [True, True]
    # Looked up together, judged in order: the first repository's refusal is the one reported.
    registry = MeetingRegistry(expected=2)
    registry.tags[(IMAGE, "sha-0123456")] = registry.store(manifest_for(OTHER), OTHER)
    registry.tags[(MIRROR, "sha-0123456")] = registry.store(manifest_for("e" * 40), "e" * 40)
    step, _ = publisher(registry, images=f"{IMAGE}\n{MIRROR}")
    with pytest.raises(ImmutableTagError, match=f"{IMAGE}:sha-0123456 already holds .* built from {OTHER}"):
        step.check_immutable_tags()
