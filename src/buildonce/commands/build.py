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

from buildonce.commands import Invocation
from buildonce.docker.buildx import (
    Builder,
    BuildOutcome,
    Output,
    Stopper,
    build_command,
    check_paths,
    docker_config_with_login,
    find_builder,
)
from buildonce.docker.buildx import (
    run_build as run_buildx,
)
from buildonce.docker.config import docker_config_dir
from buildonce.errors import FatalError, ImmutableTagError, InputError, RegistryError, VerificationError
from buildonce.github.workflow import Console
from buildonce.labels import REVISION, Keys, annotations_for
from buildonce.layout import layout_size, layout_tar
from buildonce.options import BuildOptions, PushVia, build_options
from buildonce.plan import Plan, describe, make_plan
from buildonce.references import ImageName, Reference
from buildonce.report import BuildReport
from buildonce.retry import RetryPolicy
from buildonce.tags import Subject

if TYPE_CHECKING:
    # Imported for real inside prepare(), in a thread beside the build: the SDK alone takes 100 ms to load.
    from buildonce.artifact import Artifact
    from buildonce.docker.engine import Engine
    from buildonce.oci import Manifest
    from buildonce.registry.client import Registry

PUSH_WORKERS = 4
SAVE_CHUNK = 1 << 20
T = TypeVar("T")


def run(call: Invocation) -> None:
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
    from buildonce.docker.config import Credentials
    from buildonce.docker.engine import Engine
    from buildonce.registry.client import Registry

    engine = Engine.connect(env)
    login = options.login
    logins = {login.registry: Credentials(login.username, login.password)} if login else {}
    registry = Registry(logins=logins, docker_config=docker_config_dir(env), timeout=policy.timeout_seconds)
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
    from buildonce.docker.engine import Engine

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


class _TwinPushedError(Exception):
    """The engine pushed another build's image of this same commit under its immutable name."""

    def __init__(self, existing: Existing) -> None:
        super().__init__(existing.digest)
        self.existing = existing


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
        """Fail if an immutable tag holds another commit's image; return this commit's image if one is
        already there (so there is nothing to build: the missing tags and repositories get that image).

        Every reference of an immutable tag's shape is checked, the plan's own immutable tag in each
        repository and any other planned tag that names this commit.
        """
        subject = self.plan.subject
        ours: dict[str, dict[str, str]] = {}
        overwrite = False
        for ref in self.plan.immutable_references:
            digest = self._resolve(ref)
            if digest is None:
                continue
            labels = self._labels_of(ref, digest)
            built_from = commit_of(subject, labels, self.keys)
            if built_from == subject.sha:
                ours.setdefault(digest, labels)
                continue
            other = built_from or "an unknown commit (the image has no revision label)"
            if not self.options.allow_overwrite:
                raise ImmutableTagError(
                    f"{ref} already holds {digest}, built from {other}, not from {subject.sha}. "
                    "Immutable tags name one commit and are never moved; if this tag really must be replaced, "
                    "set allow-overwrite: true."
                )
            self.console.warning(f"{ref} holds an image of {other}; overwriting it (allow-overwrite is set)")
            overwrite = True
        if overwrite or not ours:
            return None
        if len(ours) > 1:
            raise ImmutableTagError(
                f"the immutable tags of {subject.sha} hold different images of it ({', '.join(sorted(ours))}); "
                "none of them is moved to another. Set rebuild: true and allow-overwrite: true to replace them all."
            )
        ((digest, labels),) = ours.items()
        return Existing(digest, labels)

    # --- the two ways to a pushed image ----------------------------------------------------------
    def reuse(self, existing: Existing) -> BuildReport:
        """Report the image the immutable tags already hold, adding this run's other tags to it.

        Every immutable reference holds that very digest (one in each repository), so the other tags are
        added by putting its manifest under them, registry-side: nothing goes through the engine, which
        could only fetch its own platform of a multi-platform image. The engine pulls it only to load it.
        """
        digest = existing.digest
        # The outputs describe the image that is reported, whose labels (created, version…) are those of
        # the run that built it, not those this run would have given it.
        plan = replace(self.plan, labels=existing.labels, annotations=tuple(annotations_for(existing.labels)))
        self.console.notice(
            f"{plan.immutable_tag} already holds {digest}, built from {plan.subject.sha[:12]}: the build is "
            "skipped and that image is reported. Set rebuild: true to build it again.",
            title="Image reused",
        )
        report = BuildReport(plan=plan, digest=digest, pushed=True, reused=True)
        started = time.monotonic()
        missing = [ref for ref in plan.references if self._resolve(ref) != digest]
        if missing:
            with self.console.group(f"Tag: {len(missing)} reference(s)"):
                self._copy_where_missing(missing, digest)
                self._tag_in_registry(missing, digest)
        if plan.load.value:
            source = self._own_references()[0]
            self._pull(source.image, digest)
            for ref in plan.references:
                self.engine.tag(source.image.with_digest(digest), ref)
        report.push_seconds = time.monotonic() - started
        self.verify(digest)
        local = self.engine.inspect(self._own_references()[0].image.with_digest(digest)) if plan.load.value else None
        report.size = local.size if local else 0
        report.notes.append(f"Build skipped: {plan.immutable_tag} already held this commit's image.")
        report.attempts = self.policy.most_attempts
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
            # The tags were looked at beside the build; another build may have pushed to them since.
            existing = None if self.options.rebuild else self.check_immutable_tags()
            if existing is not None:
                self.console.info(f"{plan.immutable_tag} was pushed by another build of this commit meanwhile.")
                reused = self.reuse(existing)
                reused.build_seconds = outcome.seconds
                return reused
            started = time.monotonic()
            if output is Output.ENGINE:
                try:
                    report.digest = self._push_engine(outcome)
                except _TwinPushedError as twin:
                    reused = self.reuse(twin.existing)
                    reused.build_seconds = outcome.seconds
                    return reused
            else:
                report.digest = self._push_layout(layout, outcome)
            report.push_seconds = time.monotonic() - started
            report.pushed = True
            self.verify(report.digest)
        if output is Output.LAYOUT:
            report.size = layout_size(layout)
            if plan.load.value:
                self._load_layout(layout, report.digest or outcome.digest)
        else:
            local = self.engine.inspect(str(self._own_references()[0]))
            report.size = local.size if local else 0
        report.attempts = self.policy.most_attempts if plan.push.value else 0
        return report

    # --- pushing ---------------------------------------------------------------------------------
    def _own_references(self) -> list[Reference]:
        """This commit's immutable reference in each repository: names no build of another commit uses."""
        return [ref for ref in self.plan.references if ref.tag == self.plan.immutable_tag]

    def _push_engine(self, outcome: BuildOutcome) -> str:
        """Push the image through the engine by its immutable name in each repository, then put that same
        manifest under the other tags, registry-side.

        Only the immutable name is ever pushed by the engine: a mutable one (``latest``, ``nightly``, a
        version) can be moved to another build's image by a build running on the same engine between this
        build's end and its push. What the engine pushed must be what this build made, or the run fails.
        """
        digests: dict[Reference, str] = {}

        def push_repository(ref: Reference) -> None:
            digest, _ = self.policy.call(partial(self.engine.push, ref, self.policy.timeout_seconds), f"push {ref}")
            self._check_built(ref, digest, outcome)
            digests[ref] = digest
            self.console.info(f"Pushed {ref} ({digest})")

        with self.console.group(f"Push: {len(self.plan.references)} reference(s)"):
            _run_all(push_repository, self._own_references())
            distinct = set(digests.values())
            if len(distinct) != 1:
                listing = ", ".join(f"{ref} → {digest}" for ref, digest in digests.items())
                raise VerificationError(f"the pushed references got different digests: {listing}")
            digest = distinct.pop()
            self._tag_in_registry([ref for ref in self.plan.references if ref not in digests], digest)
        return digest

    def _check_built(self, ref: Reference, pushed: str, outcome: BuildOutcome) -> None:
        """Fail unless the engine pushed the image this build made (not one another build named the same).

        Only another build of this same commit uses this name. When its image is what was pushed, the tag
        holds this commit's image all the same, and that image is reported, as if it had been found there.
        """
        if self.engine.containerd_store:
            # The containerd store pushes the very manifest (or index) the build wrote.
            if pushed == outcome.digest:
                return
        else:
            # The classic store writes a new manifest at push time; its config is the image the build made.
            manifest, _ = self.policy.call(partial(self.registry.get_manifest, ref.image, pushed), f"read {ref}")
            config = manifest.json().get("config") if manifest is not None else None
            if isinstance(config, dict) and config.get("digest") == (outcome.imageid or outcome.digest):
                return
        labels = self._labels_of(ref, pushed)
        if commit_of(self.plan.subject, labels, self.keys) == self.plan.subject.sha:
            self.console.warning(
                f"another build of {self.plan.subject.sha[:12]} named its image {ref} on this engine at the same "
                f"time, and the engine pushed that one ({pushed}); it is reported in place of this build's."
            )
            raise _TwinPushedError(Existing(pushed, labels))
        raise VerificationError(
            f"the engine pushed {pushed} as {ref}, which is not the image this build made ({outcome.digest}) "
            "nor another build of this commit: something else named an image "
            f"{ref} on this engine in between. Nothing else was tagged."
        )

    def _push_layout(self, layout: Path, outcome: BuildOutcome) -> str:
        """Push the build's own OCI layout (a directory no other build writes), immutable tags first."""
        ordered = [*self._own_references(), *(r for r in self.plan.references if r.tag != self.plan.immutable_tag)]
        digest, _ = self.policy.call(lambda: self.registry.push_layout(layout, ordered), "push")
        if outcome.digest and digest != outcome.digest:
            raise VerificationError(f"the layout holds {digest}, but the build reported {outcome.digest}.")
        return digest

    def _copy_where_missing(self, references: Sequence[Reference], digest: str) -> None:
        """Copy the image by digest into each repository of ``references`` that lacks it, from one that has it."""
        repositories = list(dict.fromkeys(ref.image for ref in [*self.plan.references]))
        holders = [image for image in repositories if self._resolve(Reference(image, digest)) == digest]
        if not holders:
            raise VerificationError(f"{digest} is in none of the repositories any more.")
        for image in dict.fromkeys(ref.image for ref in references):
            if image in holders:
                continue
            self.policy.call(partial(self.registry.copy_image, holders[0], digest, image), f"copy {digest} to {image}")
            self.console.info(f"Copied {holders[0].with_digest(digest)} to {image}")

    def _tag_in_registry(self, references: Sequence[Reference], digest: str) -> None:
        """Put the manifest of ``digest`` under each reference; the image is already in each repository."""
        manifests: dict[ImageName, Manifest] = {}
        for ref in references:
            if ref.image not in manifests:
                manifest, _ = self.policy.call(
                    partial(self.registry.get_manifest, ref.image, digest), f"read {ref.image.with_digest(digest)}"
                )
                if manifest is None:
                    raise VerificationError(f"{ref.image.with_digest(digest)} is missing from the registry.")
                manifests[ref.image] = manifest

        def tag(ref: Reference) -> None:
            stored, _ = self.policy.call(
                partial(self.registry.put_manifest, ref.image, ref.tag, manifests[ref.image]), f"tag {ref}"
            )
            if stored != digest:
                raise VerificationError(f"{ref.image.registry} stored {ref} as {stored}, not {digest}.")
            self.console.info(f"Tagged {ref}")

        _run_all(tag, references)

    def _pull(self, image: ImageName, digest: str) -> None:
        self.policy.call(lambda: self.engine.pull(image, digest, self.policy.timeout_seconds), f"pull {image}@{digest}")

    def _resolve(self, ref: Reference) -> str | None:
        digest, _ = self.policy.call(lambda: self.registry.resolve(ref.image, ref.tag), f"look up {ref}")
        return digest

    def verify(self, digest: str) -> None:
        """Every tag of every image must resolve, in the registry itself, to the digest reported.

        A mutable tag that another build of a newer push moved on meanwhile is reported, not failed: it is
        expected to move. An immutable tag that does not serve the digest fails the run.
        """
        found: dict[Reference, str | None] = {}

        def look(ref: Reference) -> None:
            found[ref] = self._resolve(ref)

        _run_all(look, self.plan.references)
        immutable = set(self.plan.immutable_references)
        wrong = []
        for ref in self.plan.references:
            held = found[ref]
            if held == digest:
                continue
            if held is not None and ref not in immutable and self._moved_by_another_commit(ref, held):
                self.console.warning(f"{ref} was moved on to {held}, another commit's image, by a build since.")
                continue
            wrong.append(f"{ref} → {held or 'missing'}")
        if wrong:
            raise VerificationError(
                f"the registry does not serve {digest} under every tag: {'; '.join(wrong)}. "
                "Another job may have pushed to the same tags at the same time."
            )
        self.console.info(f"Verified in the registry: {len(self.plan.references)} reference(s) → {digest}")

    def _moved_by_another_commit(self, ref: Reference, held: str) -> bool:
        built_from = commit_of(self.plan.subject, self._labels_of(ref, held), self.keys)
        return bool(built_from) and built_from != self.plan.subject.sha

    def _labels_of(self, ref: Reference, digest: str) -> dict[str, str]:
        """The labels of the image a tag was just found to hold.

        A tag another job is pushing right now can resolve before its image reads whole; that is retried
        as a transient fault rather than taken for an image without labels.
        """

        def read() -> dict[str, str]:
            labels = self.registry.labels(ref.image, digest)
            if labels is None:
                raise RegistryError(f"{ref} points to {digest}, which cannot be read (yet)", transient=True)
            return labels

        labels, _ = self.policy.call(read, f"read labels of {ref}")
        return labels

    # --- local copies ----------------------------------------------------------------------------
    def _load_layout(self, layout: Path, digest: str) -> None:
        with self.console.group("Load into the engine"):
            loaded = self.engine.load(layout_tar(layout))
            source = loaded[-1] if loaded else digest
            for ref in self.plan.references:
                self.engine.tag(source, ref)
            self.console.info(f"Loaded {source} as {len(self.plan.references)} reference(s)")

    def save_artifact(self, directory: Path) -> Artifact:
        from buildonce.artifact import pushed_manifests, write_artifact  # zstandard's import: only builds that save

        names = [str(ref) for ref in self.plan.references]
        manifests: list[bytes] = []
        if self.plan.push.value:
            # The tar of the classic store holds the config but no registry manifest: the pushed one goes in,
            # in its exact bytes, so that consume can prove a pinned digest from the artifact alone. It is read
            # by the immutable tag, which no other commit's build can move as it could a shared one.
            first = (*self.plan.immutable_references, *self.plan.references)[0]
            manifests = pushed_manifests(
                lambda ref: self.policy.call(
                    partial(self.registry.get_manifest, first.image, ref), f"read the manifest {ref} of {first.image}"
                )[0],
                first.tag,
            )
        with self.console.group("Artifact: docker save"):
            return write_artifact(
                self.engine.save(names, SAVE_CHUNK),
                directory,
                self.plan.artifact_name,
                self.options.compression,
                manifests=manifests,
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
