"""consume's decisions, against an engine and a registry in memory: which tag it takes, when it refuses a
stale image, and when it falls back to the artifact."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from fakes import IMAGE, OTHER, SHA, FakeEngine, FakeRegistry, manifest_for

from buildonce.artifact import write_artifact
from buildonce.commands.consume import Consumer, Target, _consume, pull_starter, start_early, target_for
from buildonce.compression import Compression
from buildonce.consume_options import consume_options
from buildonce.docker.engine import LocalImage
from buildonce.errors import ArtifactError, RegistryError, VerificationError
from buildonce.github.workflow import Console, Inputs
from buildonce.labels import REVISION, Keys
from buildonce.oci import sha256_digest
from buildonce.references import ImageName
from buildonce.retry import RetryPolicy


def consumer(registry: FakeRegistry, *, check: bool = True) -> tuple[Consumer, FakeEngine, io.StringIO]:
    engine = FakeEngine(registry)
    stream = io.StringIO()
    policy = RetryPolicy(attempts=2, wait_seconds=0, sleep=lambda _: None)
    return Consumer(engine, engine, registry, policy, Keys(), check, Console(stream)), engine, stream


def target(*candidates: str, digest: str = "", sha: str = SHA) -> Target:
    return Target(ImageName(IMAGE), candidates, digest, sha)


def test_the_first_candidate_tag_found_is_pulled_by_digest_and_tagged() -> None:
    registry = FakeRegistry()
    built = manifest_for(SHA)
    registry.tags[(IMAGE, "pr-7-0123456")] = registry.store(built, SHA)
    taker, engine, _ = consumer(registry)
    consumed = taker.from_registry(target("pr-7-aaaaaaa", "pr-7-0123456"))
    assert consumed.digest == built.digest
    assert consumed.tag == "pr-7-0123456"
    assert engine.pulled == [f"{IMAGE}@{built.digest}"]
    assert engine.tagged == [(f"{IMAGE}@{built.digest}", f"{IMAGE}:pr-7-0123456")]


def test_a_stale_image_is_refused_before_it_is_pulled() -> None:
    registry = FakeRegistry()
    registry.tags[(IMAGE, "latest")] = registry.store(manifest_for(OTHER), OTHER)
    taker, engine, _ = consumer(registry)
    with pytest.raises(VerificationError, match=f"built from commit {OTHER}"):
        taker.from_registry(target("latest"))
    assert engine.pulled == []
    unchecked, engine, _ = consumer(registry, check=False)
    assert unchecked.from_registry(target("latest")).tag == "latest"
    assert len(engine.pulled) == 1


class Pending:
    """A pull started ahead (``CliPuller.start``): records whether it was waited for or cancelled."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self.waited = 0
        self.cancelled = 0

    def wait(self) -> None:
        self.waited += 1

    def cancel(self) -> None:
        self.cancelled += 1


def test_the_pull_started_ahead_is_the_first_attempt_once_the_labels_name_the_commit() -> None:
    registry = FakeRegistry()
    built = manifest_for(SHA)
    registry.tags[(IMAGE, "sha-0123456")] = registry.store(built, SHA)
    taker, engine, _ = consumer(registry)
    taker.early = early = Pending(built.digest)
    consumed = taker.from_registry(target(digest=built.digest))
    assert (consumed.digest, consumed.source, consumed.tag) == (built.digest, "registry", "")
    assert (early.waited, early.cancelled) == (1, 0)
    assert engine.pulled == []  # no second pull of its own
    assert taker.early is None


def test_a_stale_image_pulled_ahead_by_digest_is_cancelled_and_never_tagged_or_reported() -> None:
    registry = FakeRegistry()
    stale = manifest_for(OTHER)
    registry.tags[(IMAGE, "sha-0123456")] = registry.store(stale, OTHER)
    taker, engine, _ = consumer(registry)
    taker.early = early = Pending(stale.digest)
    with pytest.raises(VerificationError, match=f"built from commit {OTHER}"):
        taker.from_registry(target(digest=stale.digest))
    assert (early.waited, early.cancelled) == (0, 1)
    assert engine.pulled == []
    assert engine.tagged == []


def test_a_pull_started_ahead_is_cancelled_when_the_registry_cannot_serve() -> None:
    taker, _, _ = consumer(FakeRegistry())
    digest = "sha256:" + "b" * 64
    taker.early = early = Pending(digest)
    with pytest.raises(RegistryError, match="is not in the registry"):
        taker.from_registry(target(digest=digest))
    assert (early.waited, early.cancelled) == (0, 1)


def test_a_tag_that_resolves_starts_the_pull_of_its_digest_before_the_labels_are_read() -> None:
    registry = FakeRegistry()
    built, stale = manifest_for(SHA), manifest_for(OTHER)
    registry.tags[(IMAGE, "pr-7-0123456")] = registry.store(built, SHA)
    registry.tags[(IMAGE, "latest")] = registry.store(stale, OTHER)
    started: list[Pending] = []

    def start(image: ImageName, digest: str) -> Pending:
        assert registry.label_reads == 0  # before the check
        started.append(Pending(digest))
        return started[-1]

    taker, engine, _ = consumer(registry)
    taker.start = start
    consumed = taker.from_registry(target("pr-7-0123456"))
    assert [(pending.digest, pending.waited, pending.cancelled) for pending in started] == [(built.digest, 1, 0)]
    assert engine.pulled == []
    assert engine.tagged == [(f"{IMAGE}@{built.digest}", f"{IMAGE}:pr-7-0123456")]
    assert consumed.digest == built.digest
    registry.label_reads = 0
    with pytest.raises(VerificationError):
        taker.from_registry(target("latest"))
    assert [(pending.digest, pending.waited, pending.cancelled) for pending in started[1:]] == [(stale.digest, 0, 1)]
    assert len(engine.tagged) == 1


@pytest.mark.parametrize(
    ("inputs", "started"),
    [
        ({"digest": "sha256:" + "c" * 64, "sha": SHA}, True),
        ({"digest": "sha256:" + "c" * 64, "sha": SHA, "platform": "linux/arm64"}, True),
        ({"tag": "latest", "sha": SHA}, False),
        ({"digest": "sha256:" + "c" * 64, "source": "artifact", "artifact-path": "x.tar"}, False),
    ],
)
def test_only_a_digest_given_to_ask_the_registry_for_is_pulled_ahead(inputs: dict[str, str], started: bool) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.started: list[tuple[str, str]] = []

        def start(
            self, image: ImageName, digest: str, timeout: float, *, platform: str = "", ahead: object = None
        ) -> Pending:
            self.started.append((image.with_digest(digest), platform))
            return Pending(digest)

    options = consume_options(Inputs({}, {"image": IMAGE, **inputs}))
    recorder = Recorder()
    starter = pull_starter(recorder, options, RetryPolicy(), signed=False)  # type: ignore[arg-type]
    early = start_early(starter, options, target_for(options, None))
    assert (early is not None) is started
    if started:
        assert recorder.started == [(f"{IMAGE}@{inputs['digest']}", inputs.get("platform", ""))]
    # A signature to verify first: nothing is pulled before it is.
    assert pull_starter(recorder, options, RetryPolicy(), signed=True) is None  # type: ignore[arg-type]
    assert start_early(None, options, target_for(options, None)) is None


def test_a_missing_tag_names_every_candidate() -> None:
    taker, _, _ = consumer(FakeRegistry())
    with pytest.raises(RegistryError, match="no tag a or b"):
        taker.from_registry(target("a", "b"))
    with pytest.raises(RegistryError, match="no tag to look up"):
        taker.from_registry(target())


def test_a_pinned_digest_is_pulled_without_looking_up_a_tag() -> None:
    registry = FakeRegistry()
    built = manifest_for(SHA)
    registry.tags[(IMAGE, "sha-0123456")] = registry.store(built, SHA)
    taker, engine, _ = consumer(registry)
    consumed = taker.from_registry(target("ignored", digest=built.digest))
    assert (consumed.tag, consumed.digest) == ("", built.digest)
    assert engine.tagged == []


def test_a_registry_that_cannot_serve_defers_to_the_artifact_or_fails() -> None:
    registry = FakeRegistry()
    options = consume_options(Inputs({}, {"image": IMAGE, "tag": "latest", "sha": SHA, "defer-artifact": "true"}))
    taker, _, stream = consumer(registry)
    assert _consume(taker, options, target_for(options, None)) is None
    assert "the artifact is needed" in stream.getvalue()
    strict = consume_options(Inputs({}, {"image": IMAGE, "tag": "latest", "source": "registry"}))
    with pytest.raises(RegistryError):
        _consume(taker, strict, target_for(strict, None))


def test_the_target_of_a_pull_request_number_and_sha_is_its_planned_tags() -> None:
    options = consume_options(Inputs({}, {"image": IMAGE, "pr-number": "7", "sha": SHA}))
    found = target_for(options, None)
    assert found.sha == SHA
    assert found.digest == ""
    assert "pr-7-0123456" in found.candidates


def artifact_of(tmp_path: Path, revision: str, tag: str) -> tuple[Path, str]:
    """A classic store's docker save of one image of ``revision`` under ``tag``, saved as the build saves it."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {REVISION: revision}},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    ).encode()
    config_digest = sha256_digest(config)
    blob = "blobs/sha256/" + config_digest.removeprefix("sha256:")
    members = {blob: config, "manifest.json": json.dumps([{"Config": blob, "RepoTags": [f"{IMAGE}:{tag}"]}]).encode()}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    saved = write_artifact(iter([buffer.getvalue()]), tmp_path, "widget", Compression.NONE)
    return saved.path, config_digest


def test_an_artifact_is_checked_loaded_and_its_name_must_then_hold_that_image(tmp_path: Path) -> None:
    path, config_digest = artifact_of(tmp_path, SHA, "pr-7-0123456")
    taker, engine, _ = consumer(FakeRegistry())
    engine.containerd_store = False
    engine.local[f"{IMAGE}:pr-7-0123456"] = LocalImage(config_digest, {REVISION: SHA}, 1)
    consumed = taker.from_artifact(target("pr-7-0123456"), path)
    assert (consumed.source, consumed.tag, consumed.digest) == ("artifact", "pr-7-0123456", config_digest)
    assert engine.loaded
    # Another job re-tagged the name in between: the loaded image is not taken for the tar's.
    engine.local[f"{IMAGE}:pr-7-0123456"] = LocalImage("sha256:" + "7" * 64, {REVISION: SHA}, 1)
    with pytest.raises(ArtifactError, match="another job on this engine"):
        taker.from_artifact(target("pr-7-0123456"), path)


def test_a_stale_artifact_is_refused_before_it_is_loaded(tmp_path: Path) -> None:
    path, _ = artifact_of(tmp_path, OTHER, "latest")
    taker, engine, _ = consumer(FakeRegistry())
    engine.containerd_store = False
    with pytest.raises(VerificationError, match=f"built from commit {OTHER}"):
        taker.from_artifact(target("latest"), path)
    assert engine.loaded == []
    with pytest.raises(ArtifactError, match="holds no tagged image"):
        taker.from_artifact(Target(ImageName("registry.test/acme/other"), ("latest",), "", SHA), path)


def test_the_registry_failing_falls_back_to_the_artifact_given(tmp_path: Path) -> None:
    path, config_digest = artifact_of(tmp_path, SHA, "latest")
    options = consume_options(Inputs({}, {"image": IMAGE, "tag": "latest", "sha": SHA, "artifact-path": str(path)}))
    taker, engine, stream = consumer(FakeRegistry())
    engine.containerd_store = False
    engine.local[f"{IMAGE}:latest"] = LocalImage(config_digest, {REVISION: SHA}, 1)
    consumed = _consume(taker, options, target_for(options, None))
    assert consumed is not None
    assert consumed.source == "artifact"
    assert "using the artifact" in stream.getvalue()
