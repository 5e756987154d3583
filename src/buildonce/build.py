"""``buildonce build``: build once, push with retry, verify the digest, keep an artifact.

The order matters: the immutable tags are checked before anything is pushed (a taken tag fails the run, a
tag already holding this commit's image means there is nothing to build, and a build started beside the
check is stopped), the build runs exactly once, then push and verify retry only registry work.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from buildonce.buildx import (
    Builder,
    BuildOutcome,
    Output,
    Stopper,
    build_command,
    check_paths,
    docker_config_with_login,
    find_builder,
)
from buildonce.buildx import (
    run_build as run_buildx,
)
from buildonce.dockerconfig import docker_config_dir
from buildonce.errors import FatalError, ImmutableTagError, InputError, VerificationError
from buildonce.labels import REVISION, Keys, annotations_for
from buildonce.layout import layout_size, layout_tar
from buildonce.options import BuildOptions, PushVia, build_options
from buildonce.plan import Plan, describe, make_plan
from buildonce.references import ImageName, Reference
from buildonce.report import BuildReport
from buildonce.retry import RetryPolicy
from buildonce.tags import Subject
from buildonce.workflow import Console

if TYPE_CHECKING:
    # Imported for real inside prepare(), in a thread beside the build: the SDK alone takes 100 ms to load.
    from buildonce.__main__ import Invocation
    from buildonce.artifact import Artifact
    from buildonce.engine import Engine
    from buildonce.registry import Registry

PUSH_WORKERS = 4
SAVE_CHUNK = 1 << 20
T = TypeVar("T")


def run_build(call: Invocation) -> None:
    options = build_options(call.inputs)
    context = call.context(options.plan.default_branch)
    if options.source_date_epoch is not None:  # the build's timestamps, so the created label's too
        context = replace(context, commit_time=datetime.fromtimestamp(options.source_date_epoch, timezone.utc))
    plan = make_plan(context, options.plan, now=datetime.now(timezone.utc))
    console = call.console
    console.info(describe(plan))
    for warning in plan.warnings():
        console.warning(warning)
    if not plan.push.value and plan.push.reason != "set by the 'push' input":
        console.notice(f"Not pushing: {plan.push.reason}.", title="buildonce")
    cwd = Path.cwd()
    check_paths(options, cwd)
    builder = find_builder(options.builder, call.env)
    output = choose_output(options.push_via, builder, lambda: _containerd_store(call.env), plan)
    policy = RetryPolicy(
        attempts=options.retry.attempts,
        wait_seconds=options.retry.wait_seconds,
        timeout_seconds=options.retry.timeout_seconds,
        on_retry=lambda message: console.warning(message, title="Retrying"),
    )
    commit_epoch = int(context.commit_time.timestamp()) if context.commit_time else None

    with ExitStack() as stack:
        temp = tempfile.TemporaryDirectory(prefix="buildonce-", dir=call.env.get("RUNNER_TEMP") or None)
        scratch = Path(stack.enter_context(temp))
        # The engine, the login and the immutable-tag check run beside the build rather than before it:
        # they cost a registry round trip or two (and the SDK's import), the build rarely less. If the
        # check finds the tag taken, or already holding this commit's image, the build is stopped.
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare"))
        prepared = pool.submit(prepare, call.env, options, plan, console, policy)
        stopper = Stopper()
        prepared.add_done_callback(lambda done: _stop_unless_needed(done, stopper, options.rebuild))
        build_env = stack.enter_context(docker_config_with_login(call.env, options.login))
        command = build_command(
            options,
            plan,
            output=output,
            metadata_file=scratch / "metadata.json",
            iidfile=scratch / "iid",
            layout_dir=scratch / "layout",
            source_date_epoch=commit_epoch,
            env=build_env,
        )
        try:
            outcome = run_buildx(command, build_env, console, cwd, stopper)
        except FatalError:
            prepared.result()  # a failed preparation (no engine, a taken tag) explains more than the build
            raise
        job = prepared.result()
        stack.callback(job.close)
        # A build that finished before the check is thrown away just the same: one image per commit.
        existing = None if options.rebuild else job.existing
        report = job.reuse(existing) if existing else job.push(output, outcome, scratch)
        if plan.artifact.value:
            report.artifact = job.save_artifact(_artifact_dir(options, call.env))
            console.info(f"Saved {report.artifact.path} (sha256 {report.artifact.sha256})")
    console.info(f"digest: {report.digest or '(not pushed)'}")
    call.finish(report.outputs(), report.summary())


def prepare(
    env: Mapping[str, str], options: BuildOptions, plan: Plan, console: Console, policy: RetryPolicy
) -> BuildJob:
    """Connect to the engine and the registry, log in, and look at the immutable tags (when pushing)."""
    from buildonce.engine import Engine
    from buildonce.registry import Credentials, Registry

    engine = Engine.connect(env)
    login = options.login
    logins = {login.registry: Credentials(login.username, login.password)} if login else {}
    registry = Registry(logins=logins, docker_config=docker_config_dir(env), timeout=min(300, policy.timeout_seconds))
    job = BuildJob(plan, options, console, engine, registry, policy, Keys(options.plan.label_namespace))
    if login:
        engine.login(login)
    if plan.push.value:
        job.existing = job.check_immutable_tags()
    return job


def _stop_unless_needed(prepared: Future[BuildJob], stopper: Stopper, rebuild: bool) -> None:
    if prepared.exception() is not None:
        stopper.stop()
        return
    if prepared.result().existing is not None and not rebuild:
        stopper.stop()


def _containerd_store(env: Mapping[str, str]) -> bool:
    from buildonce.engine import Engine

    engine = Engine.connect(env)
    try:
        return engine.containerd_store
    finally:
        engine.close()


def choose_output(push_via: PushVia, builder: Builder, containerd_store: Callable[[], bool], plan: Plan) -> Output:
    """Build into the engine when it can hold the result (the docker driver; several platforms need the
    containerd store), else into an OCI layout that buildonce pushes itself. Either way the build runs once
    and a push fault only ever repeats the push."""
    # Asked only where it matters: the answer costs a connection to the engine.
    needs_store = len(plan.platforms) > 1 or push_via is PushVia.LAYOUT
    if builder.exports_to_engine and needs_store and not containerd_store():
        # The classic image store holds one platform, and its docker driver exports nothing but images.
        if len(plan.platforms) > 1:
            raise InputError(
                f"input 'platforms' names {len(plan.platforms)} platforms, but the builder {builder.name!r} uses the "
                "docker driver with the classic image store, which holds one platform per image. Create a "
                "docker-container builder first (docker/setup-buildx-action), or enable the containerd image store."
            )
        if push_via is PushVia.LAYOUT:
            raise InputError(
                "input 'push-via' is layout, but the docker driver with the classic image store cannot export "
                "an OCI layout. Use push-via: auto, or a docker-container builder."
            )
        return Output.ENGINE
    if push_via is PushVia.LAYOUT:
        return Output.LAYOUT
    engine_can = builder.exports_to_engine
    if push_via is PushVia.ENGINE:
        if not engine_can:
            raise InputError(
                f"input 'push-via' is engine, but the builder {builder.name!r} ({builder.driver} driver) cannot "
                "build this image into the engine's image store. Use push-via: auto."
            )
        return Output.ENGINE
    return Output.ENGINE if engine_can else Output.LAYOUT


def _artifact_dir(options: BuildOptions, env: Mapping[str, str]) -> Path:
    if options.artifact_dir:
        return Path(options.artifact_dir)
    return Path(env.get("RUNNER_TEMP") or tempfile.gettempdir()) / "buildonce-artifacts"


def commit_of(subject: Subject, labels: dict[str, str], keys: Keys) -> str:
    """The commit an image was built for, as its labels tell, in the terms the subject's tag uses."""
    if subject.pr_number is not None and subject.sha == subject.pr_head_sha:
        return labels.get(keys.pr_head_sha) or labels.get(REVISION, "")
    return labels.get(REVISION, "")


@dataclass(frozen=True)
class Existing:
    """The image an immutable tag already holds, built from this very commit."""

    digest: str
    labels: dict[str, str]


@dataclass
class BuildJob:
    plan: Plan
    options: BuildOptions
    console: Console
    engine: Engine
    registry: Registry
    policy: RetryPolicy
    keys: Keys
    existing: Existing | None = None

    def close(self) -> None:
        self.registry.close()
        self.engine.close()

    # --- before building -------------------------------------------------------------------------
    def check_immutable_tags(self) -> Existing | None:
        """Fail if an immutable tag holds another commit's image; return that image if every one already
        holds this commit's image (so there is nothing to build)."""
        subject = self.plan.subject
        ours: dict[str, dict[str, str]] = {}
        complete = True
        for ref in self.plan.immutable_references:
            digest = self._resolve(ref)
            if digest is None:
                complete = False
                continue
            labels, _ = self.policy.call(partial(self.registry.labels, ref.image, digest), f"read labels of {ref}")
            built_from = commit_of(subject, labels or {}, self.keys)
            if built_from == subject.sha:
                ours[digest] = labels or {}
                continue
            other = built_from or "an unknown commit (the image has no revision label)"
            if not self.options.allow_overwrite:
                raise ImmutableTagError(
                    f"{ref} already holds {digest}, built from {other}, not from {subject.sha}. "
                    "Immutable tags name one commit and are never moved; if this tag really must be replaced, "
                    "set allow-overwrite: true."
                )
            self.console.warning(f"{ref} holds an image of {other}; overwriting it (allow-overwrite is set)")
            complete = False
        if complete and len(ours) == 1:
            ((digest, labels),) = ours.items()
            return Existing(digest, labels)
        return None

    # --- the two ways to a pushed image ----------------------------------------------------------
    def reuse(self, existing: Existing) -> BuildReport:
        digest = existing.digest
        # The outputs describe the image that is reported, whose labels (created, version…) are those of
        # the run that built it, not those this run would have given it.
        plan = replace(self.plan, labels=existing.labels, annotations=tuple(annotations_for(existing.labels)))
        self.console.notice(
            f"{plan.immutable_tag} already holds {digest}, built from {plan.subject.sha[:12]}: the build is "
            "skipped and that image is reported. Set rebuild: true to build it again.",
            title="Image reused",
        )
        report = BuildReport(plan=plan, digest=digest, pushed=True, reused=True, attempts=1)
        started = time.monotonic()
        missing = [ref for ref in plan.references if self._resolve(ref) != digest]
        source = plan.immutable_references[0]
        # A new tag in the repository that holds the image is a manifest put: the engine pulls only its
        # own platform of a multi-platform image, so it could not push the others' content again.
        in_place = [ref for ref in missing if ref.image == source.image]
        elsewhere = [ref for ref in missing if ref.image != source.image]
        if in_place:
            report.attempts = max(report.attempts, self._tag_in_registry(source, digest, in_place))
        if elsewhere or plan.load.value:
            report.attempts = max(report.attempts, self._pull(source.image, digest))
            for ref in {*elsewhere, *plan.references}:
                self.engine.tag(source.image.with_digest(digest), ref)
            if elsewhere:
                _, attempts = self._push_engine(elsewhere, digest)
                report.attempts = max(report.attempts, attempts)
        report.push_seconds = time.monotonic() - started
        self.verify(digest)
        local = self.engine.inspect(plan.immutable_references[0].image.with_digest(digest)) if plan.load.value else None
        report.size = local.size if local else 0
        report.notes.append(f"Build skipped: {plan.immutable_tag} already held this commit's image.")
        return report

    def push(self, output: Output, outcome: BuildOutcome | None, scratch: Path) -> BuildReport:
        """Push what the build made, verify it, and load it where asked."""
        if outcome is None:
            raise RuntimeError("the build was stopped but there is no image to reuse")
        plan = self.plan
        layout = scratch / "layout"
        report = BuildReport(
            plan=plan,
            imageid=outcome.imageid,
            metadata=outcome.metadata,
            build_seconds=outcome.seconds,
        )
        self.console.info(f"Built {outcome.digest} in {outcome.seconds:.1f} s ({output.value} output)")
        if plan.push.value:
            started = time.monotonic()
            if output is Output.ENGINE:
                report.digest, report.attempts = self._push_engine(plan.references, outcome.digest)
            else:
                digest, report.attempts = self.policy.call(
                    lambda: self.registry.push_layout(layout, plan.references), "push"
                )
                report.digest = digest
            report.push_seconds = time.monotonic() - started
            report.pushed = True
            self.verify(report.digest)
        if output is Output.LAYOUT:
            report.size = layout_size(layout)
            if plan.load.value:
                self._load_layout(layout, report.digest or outcome.digest)
        else:
            local = self.engine.inspect(str(plan.references[0]))
            report.size = local.size if local else 0
        return report

    # --- pushing ---------------------------------------------------------------------------------
    def _push_engine(self, references: Sequence[Reference], expected: str) -> tuple[str, int]:
        """Push every reference: the first of each repository through the engine, which uploads the layers;
        the others by putting that same manifest under their tags, all at once.

        Several engine pushes of one image to one repository at the same time race inside the engine (an
        index can be committed before the children another push is still writing); a manifest put cannot.
        """
        digests: dict[Reference, str] = {}
        attempts = 0

        def attempt(what: str, operation: Callable[[], T]) -> T:
            nonlocal attempts
            result, used = self.policy.call(operation, what)
            attempts = max(attempts, used)
            return result

        def push_repository(refs: list[Reference]) -> None:
            first = refs[0]
            digest = attempt(f"push {first}", partial(self.engine.push, first, self.policy.timeout_seconds))
            digests[first] = digest
            self.console.info(f"Pushed {first} ({digest})")
            if len(refs) == 1:
                return
            manifest = attempt(f"read {first}", partial(self.registry.get_manifest, first.image, digest))
            if manifest is None:
                raise VerificationError(f"{first.image.with_digest(digest)} is missing right after its push.")

            def tag(ref: Reference) -> None:
                digests[ref] = attempt(f"tag {ref}", partial(self.registry.put_manifest, ref.image, ref.tag, manifest))
                self.console.info(f"Tagged {ref}")

            _run_all(tag, refs[1:])

        by_repository: dict[ImageName, list[Reference]] = {}
        for ref in references:
            by_repository.setdefault(ref.image, []).append(ref)
        with self.console.group(f"Push: {len(references)} reference(s)"):
            _run_all(push_repository, list(by_repository.values()))
        distinct = set(digests.values())
        if len(distinct) != 1:
            listing = ", ".join(f"{ref} → {digest}" for ref, digest in digests.items())
            raise VerificationError(f"the pushed references got different digests: {listing}")
        pushed = distinct.pop()
        if pushed != expected and self.engine.containerd_store:
            # The containerd store pushes the very manifest it built; the classic store makes a new one
            # at push time, so only there is a different digest expected.
            self.console.warning(f"the engine pushed {pushed}, the build reported {expected}")
        return pushed, attempts

    def _tag_in_registry(self, source: Reference, digest: str, references: Sequence[Reference]) -> int:
        """Put ``source``'s manifest under each reference of the same repository; the most attempts used."""
        manifest, attempts = self.policy.call(
            partial(self.registry.get_manifest, source.image, digest), f"read {source.image.with_digest(digest)}"
        )
        if manifest is None:
            raise VerificationError(f"{source.image.with_digest(digest)} is no longer in the registry.")
        for ref in references:
            _, used = self.policy.call(partial(self.registry.put_manifest, ref.image, ref.tag, manifest), f"tag {ref}")
            attempts = max(attempts, used)
            self.console.info(f"Tagged {ref}")
        return attempts

    def _pull(self, image: ImageName, digest: str) -> int:
        _, attempts = self.policy.call(
            lambda: self.engine.pull(image, digest, self.policy.timeout_seconds), f"pull {image}@{digest}"
        )
        return attempts

    def _resolve(self, ref: Reference) -> str | None:
        digest, _ = self.policy.call(lambda: self.registry.resolve(ref.image, ref.tag), f"look up {ref}")
        return digest

    def verify(self, digest: str) -> None:
        """Every tag of every image must resolve, in the registry itself, to the digest reported."""
        found: dict[Reference, str | None] = {}

        def look(ref: Reference) -> None:
            found[ref] = self._resolve(ref)

        _run_all(look, self.plan.references)
        wrong = [f"{ref} → {found[ref] or 'missing'}" for ref in self.plan.references if found[ref] != digest]
        if wrong:
            raise VerificationError(
                f"the registry does not serve {digest} under every tag: {'; '.join(wrong)}. "
                "Another job may have pushed to the same tags at the same time."
            )
        self.console.info(f"Verified in the registry: {len(self.plan.references)} reference(s) → {digest}")

    # --- local copies ----------------------------------------------------------------------------
    def _load_layout(self, layout: Path, digest: str) -> None:
        with self.console.group("Load into the engine"):
            loaded = self.engine.load(layout_tar(layout))
            source = loaded[-1] if loaded else digest
            for ref in self.plan.references:
                self.engine.tag(source, ref)
            self.console.info(f"Loaded {source} as {len(self.plan.references)} reference(s)")

    def save_artifact(self, directory: Path) -> Artifact:
        from buildonce.artifact import write_artifact  # zstandard's import is paid only by builds that save

        names = [str(ref) for ref in self.plan.references]
        with self.console.group("Artifact: docker save"):
            return write_artifact(
                self.engine.save(names, SAVE_CHUNK),
                directory,
                self.plan.artifact_name,
                self.options.compression,
            )


def _run_all(function: Callable[[T], None], items: Sequence[T]) -> None:
    """Run ``function`` on every item, concurrently when there are several; the first error is raised."""
    if len(items) <= 1:
        for item in items:
            function(item)
        return
    with ThreadPoolExecutor(max_workers=min(PUSH_WORKERS, len(items))) as pool:
        for future in [pool.submit(function, item) for item in items]:
            future.result()
