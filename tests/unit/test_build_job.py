"""The build job's push decisions, against a fake engine and registry: what is pushed, and when a run fails."""

from __future__ import annotations

import atexit
import gc
import io
import json
import threading
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import pytest
from events import payload, runner_env
from fakes import IMAGE, OTHER, SHA, FakeEngine, FakeRegistry, manifest_for

import buildonce.cli as buildonce_cli
from buildonce.buildkey import lookup_tag
from buildonce.cli import main
from buildonce.commands import Invocation
from buildonce.commands.build import Beside, _collector_paused, _scratch, _stop_unless_needed
from buildonce.commands.build_job import BuildJob, before_build, prepare, record_key_and_finish
from buildonce.commands.key import Keyed
from buildonce.commands.origin import origin_of
from buildonce.commands.publish import Existing
from buildonce.docker.buildx import BuildOutcome, Output, Stopper
from buildonce.docker.config import Login
from buildonce.docker.engine import Engine, LocalImage
from buildonce.docker.ondemand import EngineOnDemand
from buildonce.errors import ImmutableTagError, RegistryError, VerificationError
from buildonce.github.context import build_context
from buildonce.github.workflow import Console, Inputs, RunnerFiles
from buildonce.labels import REVISION, Keys
from buildonce.oci import Manifest
from buildonce.options import BuildOptions, Reuse, build_options
from buildonce.plan import Plan, make_plan
from buildonce.references import ImageName, Reference
from buildonce.report import BuildReport
from buildonce.retry import RetryPolicy


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
        engine,
        registry,
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


def test_a_loaded_image_gets_its_other_names_after_the_build_by_its_own_id(tmp_path: Path) -> None:
    registry = FakeRegistry()
    engine = FakeEngine(registry)
    built = manifest_for(SHA)
    engine.names[f"{IMAGE}:sha-0123456"] = (built, SHA)
    made = BuildOutcome(metadata={"containerimage.digest": built.digest}, imageid=built.digest, seconds=1.0)
    job(registry, engine, load="true").push(Output.ENGINE, made, tmp_path)
    assert engine.tagged == [(built.digest, f"{IMAGE}:latest")]


def test_an_image_already_under_the_immutable_tag_is_reused_and_loaded(tmp_path: Path) -> None:
    registry = FakeRegistry()
    built = manifest_for(SHA)
    registry.tags[(IMAGE, "sha-0123456")] = registry.store(built, SHA)
    engine = FakeEngine(registry)
    build_job = job(registry, engine, load="true")
    existing = build_job.check_immutable_tags()
    assert existing is not None
    report = build_job.reuse(existing)
    assert report.reused
    assert report.digest == built.digest
    assert registry.puts == ["latest"]
    assert engine.pulled == [f"{IMAGE}@{built.digest}"]
    assert sorted(name for _, name in engine.tagged) == [f"{IMAGE}:latest", f"{IMAGE}:sha-0123456"]
    assert engine.pushed == []


def test_a_layout_build_is_pushed_by_the_registry_immutable_tag_first(tmp_path: Path) -> None:
    registry = FakeRegistry()
    engine = FakeEngine(registry)
    built, _ = registry.layout
    report = job(registry, engine).push(Output.LAYOUT, outcome(built.digest), tmp_path)
    assert registry.puts == ["sha-0123456", "latest"]
    assert report.pushed
    assert report.digest == built.digest
    assert engine.pushed == []


def test_a_layout_that_holds_another_digest_than_the_build_reported_fails(tmp_path: Path) -> None:
    registry = FakeRegistry()
    with pytest.raises(VerificationError, match="the layout holds"):
        job(registry, FakeEngine(registry)).push(Output.LAYOUT, outcome(manifest_for(OTHER).digest), tmp_path)


def test_nothing_is_pushed_when_the_plan_does_not_push(tmp_path: Path) -> None:
    registry = FakeRegistry()
    engine = FakeEngine(registry)
    report = job(registry, engine, push="false").push(Output.ENGINE, outcome(manifest_for(SHA).digest), tmp_path)
    assert not report.pushed
    assert report.attempts == 0
    assert engine.pushed == registry.puts == []


def test_the_artifact_holds_every_reference_and_the_pushed_manifest(tmp_path: Path) -> None:
    registry = FakeRegistry()
    built = manifest_for(SHA)
    registry.tags[(IMAGE, "sha-0123456")] = registry.store(built, SHA)
    artifact = job(registry, FakeEngine(registry), compression="none").save_artifact(tmp_path)
    assert artifact.path.is_file()
    written = artifact.path.read_bytes()
    # The proof of the pushed manifest goes in first, then what the engine saved of every reference.
    assert f"buildonce/manifests/{built.digest.replace(':', '/')}".encode() in written
    assert written.endswith(json.dumps([f"{IMAGE}:latest", f"{IMAGE}:sha-0123456"]).encode())


def test_preparing_logs_in_and_finds_this_commits_image_which_stops_the_build() -> None:
    registry = FakeRegistry()
    built = manifest_for(SHA)
    registry.tags[(IMAGE, "sha-0123456")] = registry.store(built, SHA)
    engine = FakeEngine(registry)
    options = build_options(
        Inputs({}, {"images": IMAGE, "username": "bot", "password": "pw", "registry": "registry.test"})
    )
    plan = make_plan(
        build_context(runner_env("push-default"), payload("push-default")),
        options.plan,
        now=datetime(2030, 1, 1, tzinfo=timezone.utc),
    )
    policy = RetryPolicy(attempts=1, wait_seconds=0, sleep=lambda _: None)
    prepared = prepare({}, options, plan, Console(io.StringIO()), policy, connect=lambda: (engine, registry))
    assert engine.logins == ["registry.test"]
    assert prepared.existing == Existing(built.digest, {REVISION: SHA})
    for rebuild, stopped in ((False, True), (True, False)):
        stopper = Stopper()
        beside = Beside(lambda: prepared, partial(_stop_unless_needed, stopper=stopper, rebuild=rebuild))
        beside.start()
        assert beside.result() is prepared
        assert stopper.stopped is stopped


def test_a_failed_preparation_stops_the_build() -> None:
    def refused() -> BuildJob:
        raise ImmutableTagError("taken")

    stopper = Stopper()
    beside = Beside(refused, lambda done: _stop_unless_needed(done, stopper, rebuild=False))
    beside.start()
    with pytest.raises(ImmutableTagError, match="taken"):
        beside.result()
    assert stopper.stopped


def test_the_collector_pauses_for_the_preparations_imports_and_keeps_what_they_made() -> None:
    """Off while the preparation imports, on again after (unless it was off), what was made frozen."""
    was_on = gc.isenabled()
    kept = []  # each round's objects, alive: a frozen object freed leaves the frozen count
    try:
        for before in (True, False):
            gc.enable() if before else gc.disable()
            frozen = gc.get_freeze_count()
            with _collector_paused():
                assert not gc.isenabled()
                made = [[index] for index in range(1000)]
            kept.append(made)
            assert gc.isenabled() is before
            assert gc.get_freeze_count() >= frozen + len(made)
    finally:
        gc.unfreeze()
        gc.enable() if was_on else gc.disable()


def test_the_build_scratch_directory_is_private_and_removed_afterwards(tmp_path: Path) -> None:
    """Made in RUNNER_TEMP, readable by this user alone, a new one each build, gone after (also after a failure)."""
    with _scratch({"RUNNER_TEMP": str(tmp_path)}) as first, _scratch({"RUNNER_TEMP": str(tmp_path)}) as second:
        assert first.parent == second.parent == tmp_path
        assert first != second
        assert first.name.startswith("buildonce-")
        assert first.stat().st_mode & 0o777 == 0o700
        (first / "metadata.json").write_text("{}")
    assert list(tmp_path.iterdir()) == []

    def failing_build() -> None:
        with _scratch({"RUNNER_TEMP": str(tmp_path)}) as failed:
            (failed / "iid").write_text("sha256:x")
            raise RuntimeError("the build failed")

    with pytest.raises(RuntimeError):
        failing_build()
    assert list(tmp_path.iterdir()) == []
    with _scratch({}) as elsewhere:  # outside a runner: the system's temporary directory
        assert elsewhere.is_dir()
    assert not elsewhere.exists()


class StoreUnknownEngine(FakeEngine):
    """An engine that fails the test if asked which image store it has."""

    @property
    def containerd_store(self) -> bool:
        raise AssertionError("the engine was asked for its image store")

    @containerd_store.setter
    def containerd_store(self, value: bool) -> None:
        pass


def test_a_pushed_digest_that_is_the_built_one_is_proof_without_asking_the_engine(tmp_path: Path) -> None:
    registry = FakeRegistry()
    engine = StoreUnknownEngine(registry)
    built = manifest_for(SHA)
    engine.names[f"{IMAGE}:sha-0123456"] = (built, SHA)
    report = job(registry, engine).push(Output.ENGINE, outcome(built.digest), tmp_path)
    assert report.digest == built.digest
    # Any other digest still asks the engine (its store decides what proves the image), and fails here.
    registry = FakeRegistry()
    engine = StoreUnknownEngine(registry)
    engine.names[f"{IMAGE}:sha-0123456"] = (manifest_for(OTHER), OTHER)
    with pytest.raises(AssertionError, match="image store"):
        job(registry, engine).push(Output.ENGINE, outcome(built.digest), tmp_path)


class SlowPushEngine(FakeEngine):
    """An engine whose push waits (boundedly) for the image's inspection to have started."""

    def __init__(self, registry: FakeRegistry) -> None:
        super().__init__(registry)
        self.inspecting = threading.Event()
        self.order: list[str] = []

    def inspect(self, reference: str) -> LocalImage | None:
        self.inspecting.set()
        self.order.append(f"inspect {reference}")
        return LocalImage(id="sha256:" + "1" * 64, labels={}, size=4242)

    def push(self, reference: Reference, timeout: float) -> str:
        beside = self.inspecting.wait(timeout=10)
        self.order.append(f"push {reference} (inspect started: {beside})")
        return super().push(reference, timeout)


def test_the_images_size_is_asked_of_the_engine_beside_its_push(tmp_path: Path) -> None:
    registry = FakeRegistry()
    engine = SlowPushEngine(registry)
    built = manifest_for(SHA)
    engine.names[f"{IMAGE}:sha-0123456"] = (built, SHA)
    report = job(registry, engine).push(Output.ENGINE, outcome(built.digest), tmp_path)
    assert f"push {IMAGE}:sha-0123456 (inspect started: True)" in engine.order
    assert engine.order.count(f"inspect {IMAGE}:sha-0123456") == 1
    assert report.size == 4242


def test_a_failed_push_fails_the_run_though_the_size_was_asked_beside_it(tmp_path: Path) -> None:
    registry = FakeRegistry()
    engine = SlowPushEngine(registry)
    engine.names[f"{IMAGE}:sha-0123456"] = (manifest_for(OTHER), OTHER)
    with pytest.raises(VerificationError, match="not the image this build made"):
        job(registry, engine).push(Output.ENGINE, outcome(manifest_for(SHA).digest), tmp_path)
    assert registry.puts == []


def test_the_process_leaves_its_objects_out_of_the_collections_at_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered: list[object] = []
    monkeypatch.setattr(atexit, "register", registered.append)
    (tmp_path / "out").write_text("")
    env = {**runner_env("push-branch"), "GITHUB_OUTPUT": str(tmp_path / "out"), "INPUT_IMAGES": "a/b"}
    # main called in-process (the tests, a caller of its own) leaves the interpreter alone...
    code = main(["build"], env={**env, "INPUT_TIMEOUT-MINUTES": "soon"}, stdout=io.StringIO())
    assert code == 1
    assert registered == []
    # ...and the process entry, whatever command runs, skips the last collections.
    buildonce_cli.skip_last_collections()
    assert registered == [gc.freeze]


KEY = "3" * 64


class LookupRecordingRegistry(FakeRegistry):
    def __init__(self) -> None:
        super().__init__()
        self.looked_up: list[str] = []

    def resolve(self, image: ImageName, reference: str) -> str | None:
        self.looked_up.append(reference)
        return super().resolve(image, reference)


def keyed_inputs(**inputs: str) -> tuple[BuildOptions, Plan]:
    options = build_options(
        Inputs({}, {"images": IMAGE, "username": "bot", "password": "pw", "registry": "registry.test", **inputs})
    )
    plan = make_plan(
        build_context(runner_env("push-default"), payload("push-default")),
        options.plan,
        now=datetime(2030, 1, 1, tzinfo=timezone.utc),
    )
    return options, plan


def test_before_a_build_the_tags_and_the_key_are_looked_up_and_the_engine_left_alone() -> None:
    registry = LookupRecordingRegistry()
    engine = FakeEngine(registry)
    options, plan = keyed_inputs()
    policy = RetryPolicy(attempts=1, wait_seconds=0, sleep=lambda _: None)
    job, found = before_build(
        {}, options, plan, Console(io.StringIO()), policy, key=KEY, engine=engine, registry=registry
    )
    assert found is None  # nothing to reuse: the image is built
    assert registry.looked_up == ["sha-0123456", f"buildkey-{KEY}"]
    # The engine logs in when it is connected, beside the build, not before buildx starts.
    assert engine.logins == []
    assert job.existing is None


def test_before_a_build_a_tag_taken_by_another_commit_fails_before_the_key_is_looked_up() -> None:
    registry = LookupRecordingRegistry()
    registry.tags[(IMAGE, "sha-0123456")] = registry.store(manifest_for(OTHER), OTHER)
    options, plan = keyed_inputs()
    policy = RetryPolicy(attempts=1, wait_seconds=0, sleep=lambda _: None)
    with pytest.raises(ImmutableTagError, match=f"built from {OTHER}"):
        before_build(
            {}, options, plan, Console(io.StringIO()), policy, key=KEY, engine=FakeEngine(registry), registry=registry
        )
    assert registry.looked_up[0] == "sha-0123456"
    assert not [ref for ref in registry.looked_up if ref.startswith("buildkey-")]


def test_before_a_build_this_commits_image_is_reused_whatever_the_key_found() -> None:
    registry = FakeRegistry()
    built = manifest_for(SHA)
    registry.tags[(IMAGE, "sha-0123456")] = registry.store(built, SHA)
    options, plan = keyed_inputs(load="false")
    policy = RetryPolicy(attempts=1, wait_seconds=0, sleep=lambda _: None)
    _, found = before_build(
        {}, options, plan, Console(io.StringIO()), policy, key=KEY, engine=FakeEngine(registry), registry=registry
    )
    assert found is not None
    assert found.reused
    assert found.digest == built.digest


class RecordingEngine:
    """What ``EngineOnDemand`` connects to, in the tests: it records the login and its closing."""

    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.calls: list[str] = []

    def login(self, login: Login) -> None:
        self.calls.append(f"login {login.registry}")
        if self.refuse:
            raise RegistryError("login to registry.test as bot failed")

    def inspect(self, reference: str) -> LocalImage | None:
        self.calls.append(f"inspect {reference}")
        return None

    def close(self) -> None:
        self.calls.append("close")


@pytest.mark.parametrize("refuse", [False, True])
def test_an_engine_on_demand_logs_in_as_soon_as_it_is_connected(monkeypatch: pytest.MonkeyPatch, refuse: bool) -> None:
    made: list[RecordingEngine] = []

    def connect(env: object, timeout: float = 120) -> RecordingEngine:
        made.append(RecordingEngine(refuse))
        return made[-1]

    monkeypatch.setattr(Engine, "connect", connect)
    engine = EngineOnDemand({}, login=Login("registry.test", "bot", "pw"))
    assert made == []  # nothing until the engine is needed
    if refuse:
        with pytest.raises(RegistryError, match="login"):
            engine.inspect("x")
        assert made[0].calls == ["login registry.test", "close"]
        return
    engine.inspect("x")
    engine.inspect("y")
    assert [engine.calls for engine in made] == [["login registry.test", "inspect x", "inspect y"]]


class FilesystemRegistry(FakeRegistry):
    """A registry that, as Distribution's filesystem driver does, rewrites a manifest's links in place on every
    put: a read of that manifest while the put is in flight is answered with an HTTP 500."""

    def __init__(self) -> None:
        super().__init__()
        self.writing: set[str] = set()
        self.torn: list[str] = []
        self.lock = threading.Lock()

    def put_manifest(self, image: ImageName, tag: str, manifest: Manifest) -> str:
        with self.lock:
            self.writing.add(manifest.digest)
        try:
            time.sleep(0.05)  # long enough for a read running beside it to land inside it
            return super().put_manifest(image, tag, manifest)
        finally:
            with self.lock:
                self.writing.discard(manifest.digest)

    def resolve(self, image: ImageName, reference: str) -> str | None:
        digest = super().resolve(image, reference)
        with self.lock:
            if digest in self.writing:
                self.torn.append(reference)
                raise RegistryError("HTTP 500: UNKNOWN: unknown error", transient=True)
        return digest


def test_nothing_reads_the_image_while_its_build_key_is_recorded(tmp_path: Path) -> None:
    registry = FilesystemRegistry()
    build_job = job(registry, FakeEngine(registry), artifact="true", compression="none")
    built = manifest_for(SHA)
    registry.tags[(IMAGE, "sha-0123456")] = registry.tags[(IMAGE, "latest")] = registry.store(built, SHA)
    outputs = tmp_path / "output"
    outputs.write_text("")
    env = {"GITHUB_OUTPUT": str(outputs), "RUNNER_TEMP": str(tmp_path)}
    call = Invocation(Inputs(env, {}), env, Console(io.StringIO()), RunnerFiles.from_env(env))
    context = build_context(runner_env("push-default"), payload("push-default"))
    origin = origin_of(context, SHA, build_job.options.plan.label_namespace)
    report = BuildReport(plan=build_job.plan, digest=built.digest, pushed=True)
    keyed = Keyed(Reuse.CONTENT, build_job.options, build_job.plan, "b" * 64)
    record_key_and_finish(call, report, keyed, build_job, origin)
    # The lookup tag was put, the artifact then read the pushed manifest: one after the other, never torn.
    assert lookup_tag("b" * 64) in registry.puts
    assert registry.torn == []
    assert report.artifact is not None
    assert f"buildonce/manifests/{built.digest.replace(':', '/')}".encode() in report.artifact.path.read_bytes()
    assert report.digest in outputs.read_text()


class MeetingEngine(FakeEngine):
    """An engine whose tag calls wait (boundedly) until ``expected`` of them are in flight together."""

    def __init__(self, registry: FakeRegistry, expected: int) -> None:
        super().__init__(registry)
        self.met = threading.Barrier(expected, timeout=10)
        self.together: list[bool] = []
        self.lock = threading.Lock()

    def tag(self, source: str, reference: Reference) -> None:
        try:
            self.met.wait()
            met = True
        except threading.BrokenBarrierError:
            met = False
        with self.lock:
            self.together.append(met)
            super().tag(source, reference)


def test_a_loaded_image_gets_its_other_names_several_at_once(tmp_path: Path) -> None:
    registry = FakeRegistry()
    engine = MeetingEngine(registry, expected=3)
    built = manifest_for(SHA)
    engine.names[f"{IMAGE}:sha-0123456"] = (built, SHA)
    made = BuildOutcome(metadata={"containerimage.digest": built.digest}, imageid=built.digest, seconds=1.0)
    job(registry, engine, load="true", tags="edge,stable").push(Output.ENGINE, made, tmp_path)
    assert engine.together == [True, True, True]
    assert sorted(engine.tagged) == [(built.digest, f"{IMAGE}:{tag}") for tag in ("edge", "latest", "stable")]
