"""What a build made, published: the build job, prepared beside buildx (engine, registry, the immutable-tag
check), then pushing, verifying, loading, saving the artifact, signing and writing the outputs.

Imported in the thread that prepares the job, while buildx runs: none of it is needed to start the build,
and its imports (the publisher, the signing step, the layouts, the report) would otherwise delay buildx.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from buildonce.buildkey import lookup_tag
from buildonce.commands import Invocation, promote
from buildonce.commands.connect import open_registry
from buildonce.commands.origin import OIDC_VARIABLE, Origin
from buildonce.commands.publish import Existing, Publisher, TwinPushedError, commit_of, run_all
from buildonce.docker.buildx import BuildOutcome, Output
from buildonce.errors import VerificationError
from buildonce.github.workflow import Console
from buildonce.labels import Keys, annotations_for
from buildonce.layout import layout_size, layout_tar
from buildonce.options import BuildOptions
from buildonce.plan import Plan
from buildonce.references import Reference
from buildonce.report import BuildReport
from buildonce.retry import RetryPolicy
from buildonce.signing import Signed, nothing_to_sign

if TYPE_CHECKING:
    from buildonce.artifact import Artifact
    from buildonce.commands.key import Keyed
    from buildonce.commands.seams import EngineAPI, RegistryAPI

    # Imported for real inside prepare(): the SDK alone takes 100 ms to load.
    from buildonce.docker.engine import LocalImage

SAVE_CHUNK = 1 << 20


def prepare(
    env: Mapping[str, str],
    options: BuildOptions,
    plan: Plan,
    console: Console,
    policy: RetryPolicy,
    *,
    connect: Callable[[], tuple[EngineAPI, RegistryAPI]] | None = None,
    log_in: bool = True,
) -> BuildJob:
    """Connect to the engine and the registry (``connect``, for the tests), log in (unless the engine does
    it itself when connected), and look at the immutable tags (when pushing)."""
    if connect is None:
        from buildonce.docker.engine import Engine

        engine: EngineAPI = Engine.connect(env)
        registry: RegistryAPI = open_registry(options.login, env, policy)
    else:
        engine, registry = connect()
    login = options.login
    job = BuildJob(plan, options, console, engine, registry, policy, Keys(options.plan.label_namespace))
    if login and log_in:
        engine.login(login)
    if plan.push.value:
        job.existing = job.check_immutable_tags()
    return job


def before_build(
    env: Mapping[str, str],
    options: BuildOptions,
    plan: Plan,
    console: Console,
    policy: RetryPolicy,
    *,
    key: str,
    engine: EngineAPI,
    registry: RegistryAPI,
) -> tuple[BuildJob, BuildReport | None]:
    """The immutable tags, then the build key, looked up before buildx starts: the job, and what it reuses or
    promotes (None when the image must be built). One after the other, over one warm connection: asked at once,
    the second on a connection of its own cost more (its TLS set-up) than the round trip it saved."""
    job = prepare(env, options, plan, console, policy, connect=lambda: (engine, registry), log_in=False)
    try:
        return job, without_build(job, key)
    except BaseException:
        job.close()
        raise


def record_key_and_finish(call: Invocation, report: BuildReport, keyed: Keyed, job: BuildJob, origin: Origin) -> None:
    """Record the build key, then save the artifact, sign and write the outputs.

    One after the other: a registry on a filesystem (Distribution's own driver) rewrites the manifest's links
    in place on every put, and a read of that manifest meanwhile (the artifact's copy of it, the signer's)
    is answered with an HTTP 500. The put is a round trip or two; a retried read costs a second.
    """
    _record_key(report, keyed, job)
    finish(call, report, job, job.options, origin)


def _record_key(report: BuildReport, keyed: Keyed, job: BuildJob) -> None:
    """Say why the image was built, and record its build key: the label is in the image, and a built image
    gets the key's lookup tag in each repository (a reused one has it from its own build)."""
    if not report.reused:
        report.notes.append(keyed.why_built())
    if keyed.key:
        report.build_key = keyed.key
        if report.digest and not report.reused:
            promote.record_key(job.registry, job.policy, job.plan.images, report.digest, keyed.key)


def finish(
    call: Invocation,
    report: BuildReport,
    job: BuildJob,
    options: BuildOptions,
    origin: Origin,
) -> None:
    """Save the artifact, sign what was published (built, reused or promoted alike), write the outputs."""
    if report.plan.artifact.value:
        report.artifact = job.save_artifact(_artifact_dir(options, call.env))
        call.console.info(f"Saved {report.artifact.path} (sha256 {report.artifact.sha256})")
    signed = _sign(call, options, origin, job, report)
    call.console.info(f"digest: {report.digest or '(not pushed)'}")
    call.finish({**report.outputs(), **signed.outputs()}, report.summary() + signed.summary_line() + "\n")


def _sign(call: Invocation, options: BuildOptions, origin: Origin, job: BuildJob, report: BuildReport) -> Signed:
    """Hand the published digest (and the artifact) to the signing step, over the job's registry session. The
    step (and cosign's adapter) is loaded only when there is something to sign."""
    digest = report.digest if report.pushed else ""
    images = list(dict.fromkeys(ref.image for ref in report.plan.references))
    artifact = report.artifact.path if report.artifact else None
    oidc = bool(call.env.get(OIDC_VARIABLE))
    subject = images[0].name if images else ""
    unsigned = nothing_to_sign(
        options.sign, pushed=bool(digest), fork=origin.fork, oidc=oidc, artifact=artifact is not None, subject=subject
    )
    if unsigned is not None:
        return unsigned
    from buildonce.commands.sign import sign_published

    return sign_published(
        call.env,
        call.console,
        job.policy,
        job.registry,
        options=options.sign,
        origin=origin,
        digest=digest,
        images=images,
        artifact=artifact,
        login=options.login,
    )


def _size(local: LocalImage | None) -> int:
    return local.size if local else 0


def _artifact_dir(options: BuildOptions, env: Mapping[str, str]) -> Path:
    if options.artifact_dir:
        return Path(options.artifact_dir)
    return Path(env.get("RUNNER_TEMP") or tempfile.gettempdir()) / "buildonce-artifacts"


@dataclass
class BuildJob:
    """What the build made, pushed and handed to the publishing step, then loaded or saved where asked."""

    plan: Plan
    options: BuildOptions
    console: Console
    engine: EngineAPI
    registry: RegistryAPI
    policy: RetryPolicy
    keys: Keys
    existing: Existing | None = None
    publisher: Publisher = field(init=False)

    def __post_init__(self) -> None:
        self.publisher = Publisher.for_plan(
            self.plan,
            self.console,
            self.registry,
            self.policy,
            self.keys,
            allow_overwrite=self.options.allow_overwrite,
            rebuild=self.options.rebuild,
        )

    def close(self) -> None:
        self.registry.close()
        self.engine.close()

    def check_immutable_tags(self) -> Existing | None:
        return self.publisher.check_immutable_tags()

    # --- the two ways to a pushed image ----------------------------------------------------------
    def reuse(self, existing: Existing, why: str = "") -> BuildReport:
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
            why
            or f"{plan.immutable_tag} already holds {digest}, built from {plan.subject.sha[:12]}: the build is "
            "skipped and that image is reported. Set rebuild: true to build it again.",
            title="Image reused",
        )
        report = BuildReport(plan=plan, digest=digest, pushed=True, reused=True)
        started = time.monotonic()
        self.publisher.put_where_missing(digest)
        report.push_seconds = time.monotonic() - started
        self.publisher.verify(digest)
        report.size = self.load_pushed(digest)
        report.notes.append(why or f"Build skipped: {plan.immutable_tag} already held this commit's image.")
        report.attempts = self.policy.most_attempts
        return report

    def load_pushed(self, digest: str) -> int:
        """Pull an image the registry serves under the plan's references into the engine when the plan loads
        it, under every reference; its size there (0 when not loaded)."""
        if not self.plan.load.value:
            return 0
        own = self.publisher.own_references()[0]
        self.policy.call_timed(
            lambda timeout: self.engine.pull(own.image, digest, timeout), f"pull {own.image}@{digest}"
        )
        source = own.image.with_digest(digest)
        run_all(lambda ref: self.engine.tag(source, ref), self.plan.references)
        local = self.engine.inspect(source)
        return local.size if local else 0

    def push(self, output: Output, outcome: BuildOutcome | None, scratch: Path) -> BuildReport:
        """Hand what the build made to the publishing step, and load it where asked."""
        if outcome is None:
            raise RuntimeError("the build was stopped but there is no image to reuse")
        if output is Output.LAYOUT:
            return self._publish(output, outcome, scratch, lambda: layout_size(scratch / "layout"))
        # The engine reads the image's size from its store while it pushes the image: asked beside the push
        # (by the immutable name, which only this commit's builds give), it costs the run nothing.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspect") as pool:
            local = pool.submit(self.engine.inspect, str(self.publisher.own_references()[0]))
            return self._publish(output, outcome, scratch, lambda: _size(local.result()))

    def _publish(self, output: Output, outcome: BuildOutcome, scratch: Path, size: Callable[[], int]) -> BuildReport:
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
            if output is Output.ENGINE:
                upload = partial(self._push_engine, outcome)
            else:
                upload = partial(self._push_layout, layout, outcome)
            published = self.publisher.publish(upload)
            if isinstance(published, Existing):
                reused = self.reuse(published)
                reused.build_seconds = outcome.seconds
                return reused
            report.digest = published.digest
            report.push_seconds = published.seconds
            report.pushed = True
        report.size = size()
        if plan.load.value:
            if output is Output.LAYOUT:
                self._load_layout(layout, report.digest or outcome.digest)
            else:
                self._name_locally(outcome)
        report.attempts = self.policy.most_attempts if plan.push.value else 0
        return report

    # --- uploads ---------------------------------------------------------------------------------
    def _push_engine(self, outcome: BuildOutcome) -> str:
        """Push the image through the engine by its immutable name in each repository, then put that same
        manifest under the other tags, registry-side.

        Only the immutable name is ever pushed by the engine: a mutable one (``latest``, ``nightly``, a
        version) can be moved to another build's image by a build running on the same engine between this
        build's end and its push. What the engine pushed must be what this build made, or the run fails.
        """
        digests: dict[Reference, str] = {}

        def push_repository(ref: Reference) -> None:
            digest = self.policy.call_timed(partial(self.engine.push, ref), f"push {ref}")
            self._check_built(ref, digest, outcome)
            digests[ref] = digest
            self.console.info(f"Pushed {ref} ({digest})")

        with self.console.group(f"Push: {len(self.plan.references)} reference(s)"):
            run_all(push_repository, self.publisher.own_references())
            distinct = set(digests.values())
            if len(distinct) != 1:
                listing = ", ".join(f"{ref} → {digest}" for ref, digest in digests.items())
                raise VerificationError(f"the pushed references got different digests: {listing}")
            digest = distinct.pop()
            self.publisher.tag_in_registry([ref for ref in self.plan.references if ref not in digests], digest)
        return digest

    def _name_locally(self, outcome: BuildOutcome) -> None:
        """Give the loaded image the plan's other names, by the id of what this build made."""
        own = set(self.publisher.own_references())
        source = outcome.imageid or str(self.publisher.own_references()[0])
        # Several at once: a busy engine with the containerd store can take half a second over each name.
        run_all(lambda ref: self.engine.tag(source, ref), [ref for ref in self.plan.references if ref not in own])

    def _check_built(self, ref: Reference, pushed: str, outcome: BuildOutcome) -> None:
        """Fail unless the engine pushed the image this build made (not one another build named the same).

        Only another build of this same commit uses this name. When its image is what was pushed, the tag
        holds this commit's image all the same, and that image is reported, as if it had been found there.
        """
        if pushed == outcome.digest:
            # The very manifest (or index) the build wrote, as the containerd store pushes it: proof enough,
            # without asking the engine which store it has.
            return
        if not self.engine.containerd_store:
            # The classic store writes a new manifest at push time; its config is the image the build made.
            manifest, _ = self.policy.call(partial(self.registry.get_manifest, ref.image, pushed), f"read {ref}")
            config = manifest.json().get("config") if manifest is not None else None
            if isinstance(config, dict) and config.get("digest") == (outcome.imageid or outcome.digest):
                return
        labels = self.publisher.labels_of(ref, pushed)
        if commit_of(self.plan.subject, labels, self.keys) == self.plan.subject.sha:
            self.console.warning(
                f"another build of {self.plan.subject.sha[:12]} named its image {ref} on this engine at the same "
                f"time, and the engine pushed that one ({pushed}); it is reported in place of this build's."
            )
            raise TwinPushedError(Existing(pushed, labels))
        raise VerificationError(
            f"the engine pushed {pushed} as {ref}, which is not the image this build made ({outcome.digest}) "
            "nor another build of this commit: something else named an image "
            f"{ref} on this engine in between. Nothing else was tagged."
        )

    def _push_layout(self, layout: Path, outcome: BuildOutcome) -> str:
        """Push the build's own OCI layout (a directory no other build writes), immutable tags first."""
        own = self.publisher.own_references()
        ordered = [*own, *(r for r in self.plan.references if r.tag != self.plan.immutable_tag)]
        digest, _ = self.policy.call(lambda: self.registry.push_layout(layout, ordered), "push")
        if outcome.digest and digest != outcome.digest:
            raise VerificationError(f"the layout holds {digest}, but the build reported {outcome.digest}.")
        return digest

    # --- local copies ----------------------------------------------------------------------------
    def _load_layout(self, layout: Path, digest: str) -> None:
        with self.console.group("Load into the engine"):
            loaded = self.engine.load(layout_tar(layout))
            source = loaded[-1] if loaded else digest
            run_all(lambda ref: self.engine.tag(source, ref), self.plan.references)
            self.console.info(f"Loaded {source} as {len(self.plan.references)} reference(s)")

    def save_artifact(self, directory: Path) -> Artifact:
        from buildonce.artifact import pushed_manifests, write_artifact

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


# --- the step before a build ------------------------------------------------------------------------------


def without_build(job: BuildJob, key: str) -> BuildReport | None:
    """This commit's image, found under its immutable tags or by its key, or an image of another commit with
    the same key, promoted; None when there is nothing to reuse and the image must be built."""
    if job.existing is not None:
        report = job.reuse(job.existing)
        report.build_key = key
        return report
    plan, keys, registry = job.plan, job.keys, job.registry
    found = promote.lookup(registry, job.policy, plan.images, key, keys)
    if found is None:
        return None
    built_from = commit_of(plan.subject, found.labels, keys)
    if built_from == plan.subject.sha:
        why = (
            f"{found.image.with_digest(found.digest)} was built from this very commit and has the same build key "
            f"({key[:12]}): it is reused as it is, nothing is built."
        )
        report = job.reuse(Existing(found.digest, found.labels), why=why)
        report.build_key = key
        return report
    job.console.info(
        f"{found.image.with_tag(lookup_tag(key))} is {found.digest}, built from {built_from or 'another commit'} "
        f"with this build's key: promoting it to {plan.subject.sha[:12]}."
    )
    promoted = promote.promote_image(registry, job.policy, found, plan.labels, keys)
    published = job.publisher.publish(promoted.digest)
    if isinstance(published, Existing):
        report = job.reuse(published)
        report.build_key = key
        return report
    labels = dict(sorted(promoted.labels.items()))
    shown = replace(plan, labels=labels, annotations=tuple(annotations_for(labels, plan.annotations)))
    report = BuildReport(plan=shown, digest=published.digest, pushed=True, promoted_from=found.digest, build_key=key)
    report.push_seconds = published.seconds
    job.console.notice(
        f"Promoted {found.digest} (built from {built_from or 'another commit'}, same build key {key[:12]}) to "
        f"{plan.subject.sha[:12]} as {published.digest}: same layers, this commit's labels, nothing built.",
        title="Image promoted",
    )
    report.notes.append(
        f"Promoted, not built: {found.digest}, built from {built_from or 'another commit'}, has this build's key "
        f"{key[:12]}; {promoted.uploaded} bytes of config and manifests were written, no layer."
        + (f" Its {promoted.dropped} attestation(s) were left out." if promoted.dropped else "")
    )
    report.size = job.load_pushed(published.digest)
    report.attempts = job.policy.most_attempts
    promote.record_key(registry, job.policy, plan.images, published.digest, key)
    return report
