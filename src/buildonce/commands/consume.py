"""``buildonce consume``: get this commit's image downstream, and prove it is.

The tag to look for comes from the same planner the build used (``subject_of`` and ``plan_tags``), so a
consumer finds exactly what was pushed. The image is checked before it is named or reported: its labels
must name the commit the job is meant to test, else a stale or re-pushed tag would be tested in its place.

Unless a signature is required, the engine starts pulling the digest as soon as it is known (a digest given:
before the registry is asked anything; a tag: once it resolves) while the labels are read, so a consumer pays
for the pull and the check side by side rather than one after the other. A pull by digest names nothing but
that digest; an image the check refuses is never tagged nor reported, and the step fails. A signature, when
required, is verified before anything is pulled or loaded.

Only what every run needs is imported here: the artifact's readers, the signature checks and the registry
client are imported when they are used, the last after the early pull has started.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from buildonce.commands import Invocation
from buildonce.commands.connect import open_registry, retry_policy
from buildonce.commands.seams import EngineAPI, PendingPullAPI, PullAPI, RegistryAPI
from buildonce.consume_options import ConsumeOptions, Source, consume_options
from buildonce.docker.cli import CliPuller, PendingPull
from buildonce.docker.config import docker_config_with_login
from buildonce.docker.ondemand import EngineOnDemand
from buildonce.errors import ArtifactError, ContextError, InputError, RegistryError
from buildonce.github.workflow import Console
from buildonce.labels import Keys, check_fresh
from buildonce.oci import platforms_of, select_manifest
from buildonce.references import ImageName, Reference
from buildonce.retry import RetryPolicy
from buildonce.tags import Kind, Subject, plan_tags, subject_of

if TYPE_CHECKING:
    from buildonce.commands.sign import SignatureVerifier
    from buildonce.docker.ahead import PullAhead
    from buildonce.github.context import Context
    from buildonce.tarimage import HeldImage, TarContents


@dataclass(frozen=True)
class Target:
    """What a consumer looks for: an image, the tags it may be under (or a digest), and its commit."""

    image: ImageName
    candidates: tuple[str, ...]
    digest: str
    sha: str
    """The commit the job tests; empty when nothing tells it (then freshness cannot be checked)."""


def target_for(options: ConsumeOptions, context: Context | None) -> Target:
    """Work out the image to consume from explicit inputs first, then from the event."""
    image = options.image
    if image is None:
        raise InputError("input 'image' is empty. Give the image name the build pushed, e.g. image: ghcr.io/acme/app.")
    if options.digest or options.tag:
        return Target(image, (options.tag,) if options.tag else (), options.digest, options.sha)
    if options.pr_number is not None and options.sha:
        subject = Subject(
            kind=Kind.PULL_REQUEST,
            sha=options.sha,
            revision="",
            ref_name="",
            pr_number=options.pr_number,
            pr_head_sha=options.sha,
        )
    elif context is not None:
        try:
            subject = subject_of(context, pr_sha=options.pr_sha, pr_number=options.pr_number)
        except ContextError:
            # A fork's pull request: the workflow_run names no PR number, but then nothing was pushed
            # either, and the artifact (which does not need the tag to be found) is the way in.
            if not ((options.artifact_path or options.defer_artifact) and context.upstream):
                raise
            return Target(image, (), "", options.sha or context.upstream.head_sha)
    else:
        raise InputError(
            "nothing says which image to consume: give 'digest' or 'tag', or 'pr-number' and 'sha', "
            "or run on the event that should pick it (workflow_run, pull_request, push)."
        )
    tags = plan_tags(subject, options.policy)
    return Target(image, tags.candidates, "", options.sha or subject.sha)


@dataclass(frozen=True)
class Consumed:
    image: str
    digest: str
    source: str
    tag: str

    def outputs(self) -> dict[str, str]:
        return {"image": self.image, "digest": self.digest, "source": self.source, "tag": self.tag}


@dataclass
class Consumer:
    puller: PullAPI
    """The registry path's pull and tag: the docker CLI, which starts in milliseconds."""
    engine: EngineAPI
    """The engine itself (the SDK): ``EngineOnDemand``, connected only when an artifact is to be loaded."""
    registry: RegistryAPI
    policy: RetryPolicy
    keys: Keys
    check: bool
    console: Console
    platform: str = ""
    """The platform to pull from an index (input 'platform'); empty pulls the engine's own."""
    signatures: SignatureVerifier | None = None
    """Set when a signature is required: checked before anything is pulled or loaded."""
    start: Callable[[ImageName, str], PendingPullAPI] | None = None
    """Starts the pull of a digest as soon as it is known, beside the checks; ``None`` pulls after them (a
    signature to verify first)."""
    early: PendingPullAPI | None = None
    """The pull started ahead: of the digest given (``start_early``), or of the tag's once it resolved. It is
    the pull's first attempt; it is cancelled when a check fails."""

    def from_registry(self, target: Target) -> Consumed:
        """Resolve the tag, check the image's commit, then pull it by digest (or finish the early pull)."""
        try:
            return self._from_registry(target)
        finally:
            if self.early is not None:  # not waited for: the check failed, or the registry could not serve
                self.early.cancel()
                self.early = None

    def _from_registry(self, target: Target) -> Consumed:
        tag, digest = "", target.digest
        for candidate in () if digest else target.candidates:
            found, _ = self.policy.call(partial(self.registry.resolve, target.image, candidate), f"look up {candidate}")
            if found:
                tag, digest = candidate, found
                break
        if not digest and not target.candidates:
            raise RegistryError("no tag to look up in the registry (the triggering run named no pull request)")
        if not digest:
            raise RegistryError(
                f"{target.image} has no tag {' or '.join(target.candidates)} in the registry. "
                "Did the build for this commit push (a fork's pull request does not), and did it finish?"
            )
        reference = target.image.with_digest(digest)
        if self.early is None and self.start is not None:
            self.early = self.start(target.image, digest)
        checked = self._platform_child(target.image, digest) if self.platform else digest
        if self.check and target.sha:
            labels, _ = self.policy.call(partial(self.registry.labels, target.image, checked), f"read {reference}")
            if labels is None:
                raise RegistryError(f"{reference} is not in the registry.")
            check_fresh(reference, labels, target.sha, self.keys)
        if self.signatures is not None:
            # On the very digests the engine will pull (its platform's manifest) and the index that lists it.
            from buildonce.commands.sign import digests_to_verify

            platform = self.platform or self.engine.platform
            pulled = digests_to_verify(self.registry, self.policy, target.image, digest, platform)
            found = f"{target.image.with_tag(tag)} holds {digest}" if tag else f"the digest given, {digest}"
            self.signatures.image(target.image, pulled, found)
        with self.console.group(f"Pull {reference}"):
            self.policy.call_timed(partial(self._pull, target.image, digest), f"pull {reference}")
        if tag:
            self.puller.tag(reference, Reference(target.image, tag))
        self.console.info(f"Pulled {reference}" + (f" ({target.image.with_tag(tag)})" if tag else ""))
        return Consumed(image=reference, digest=digest, source="registry", tag=tag)

    def _pull(self, image: ImageName, digest: str, timeout: float) -> None:
        """One attempt: the early pull's end when it is of this digest, else a pull of its own."""
        early, self.early = self.early, None
        if early is not None and early.digest == digest:
            try:
                early.wait()
            except BaseException:
                early.cancel()  # ended already (a failed attempt), or interrupted: not left running
                raise
            return
        if early is not None:
            early.cancel()
        self.puller.pull(image, digest, timeout, platform=self.platform)

    def _platform_child(self, image: ImageName, digest: str) -> str:
        """The manifest of ``self.platform`` that the index ``digest`` lists, checked to be served by its own
        digest; a single-platform image is its own (the engine's pull checks its platform)."""
        reference = image.with_digest(digest)
        top, _ = self.policy.call(partial(self.registry.get_manifest, image, digest), f"read {reference}")
        if top is None:
            raise RegistryError(f"{reference} is not in the registry.")
        if not top.is_index:
            return digest
        index = top.json()
        entry = select_manifest(index, self.platform)
        if entry is None:
            listed = ", ".join(platforms_of(index)) or "none"
            raise RegistryError(
                f"{reference} has no image for {self.platform} (input 'platform'); it has: {listed}. Give one of "
                "those, or build that platform too."
            )
        child = str(entry["digest"])

        def served() -> None:
            if self.registry.resolve(image, child) != child:
                # Right after the merge a registry may not serve a child yet; retried as transient.
                raise RegistryError(
                    f"{reference} lists {child} for {self.platform}, which is not served.", transient=True
                )

        self.policy.call(served, f"look up {image.with_digest(child)}")
        self.console.info(f"{reference} lists {image.with_digest(child)} for {self.platform}")
        return child

    def from_artifact(self, target: Target, path: Path) -> Consumed:
        """Check the tar's checksum, read from its own files which image it holds and, with a pinned digest,
        that it is that digest; check its commit; load it; then check that the engine's name now points at
        exactly that image. Nothing the engine held before is ever taken for the tar's image."""
        from buildonce.artifact import read_image_tar, scan_image_tar
        from buildonce.artifact import verify as verify_artifact
        from buildonce.tarimage import held_images, loaded_matches, pick

        verify_artifact(path)
        if self.signatures is not None:
            self.signatures.blob(path)
        contents = scan_image_tar(path)
        engine = self.engine
        containerd, platform = engine.containerd_store, engine.platform
        held = pick(held_images(contents, target.image, containerd=containerd, platform=platform), target.candidates)
        if not held:
            raise ArtifactError(
                f"the artifact {path} holds no tagged image of {target.image}. Was it saved by the build of this image?"
            )
        chosen = held[0]
        if target.digest:
            chosen = self._pinned(contents, held, target, path, platform)
        elif target.candidates and chosen.tag not in target.candidates:
            # The tags the build planned first; else any image of this repository in the tar (a fork's PR,
            # whose number the triggering run did not name).
            self.console.info(f"{path} holds none of {', '.join(target.candidates)}; taking {chosen.name}")
        name = target.image.with_tag(chosen.tag)
        if self.check and target.sha:
            check_fresh(name, chosen.labels, target.sha, self.keys)
        with self.console.group(f"Load {path.name}"):
            engine.load(read_image_tar(path))
        local = engine.inspect(name)
        if local is None or not loaded_matches(chosen, local.id, local.facts):
            now = local.id if local else "nothing"
            raise ArtifactError(
                f"after loading {path}, the engine's {name} is {now}, not the image the tar holds "
                f"({chosen.identity}): another job on this engine may have tagged it at the same time. Re-run the job."
            )
        self.console.info(f"Loaded {name} ({local.id}) from {path}")
        return Consumed(image=name, digest=target.digest or local.id, source="artifact", tag=chosen.tag)

    def _pinned(
        self, contents: TarContents, held: Sequence[HeldImage], target: Target, path: Path, platform: str
    ) -> HeldImage:
        """The held image the tar proves to be the pinned digest; else one error naming both digests."""
        from buildonce.tarimage import describe_held, why_not_pinned

        reasons = []
        for image in held:
            reason = why_not_pinned(contents, image, target.digest, platform)
            if not reason:
                return image
            reasons.append(f"{describe_held(contents, image, platform)}: {reason}")
        raise ArtifactError(
            f"the artifact {path} does not hold {target.image.with_digest(target.digest)}: it holds "
            + "; ".join(reasons)
            + ". Give the artifact of the build that pushed this digest, or the digest that build reported."
        )


def run(call: Invocation) -> None:
    options = consume_options(call.inputs)
    console = call.console
    if options.source is Source.ARTIFACT and not options.artifact_path:
        raise InputError("input 'source' is artifact, but 'artifact-path' is empty. Give the path of the tar.")
    context: Context | None = None
    if not (options.digest or options.tag or (options.pr_number and options.sha)):
        context = call.context(options.default_branch)
    target = target_for(options, context)
    policy = retry_policy(options.retry, console)
    console.info(
        f"Consuming {target.image} "
        + (f"@{target.digest}" if target.digest else f"tag {' or '.join(target.candidates)}")
        + (f" for commit {target.sha}" if target.sha else "")
    )
    if options.check_freshness and not target.sha:
        console.warning("the image's commit is not checked: give 'sha' (or use an event that names the commit)")
    signatures: SignatureVerifier | None = None
    if options.signature.on:
        from buildonce.commands.sign import signature_verifier

        signature, login = options.signature, options.login
        signatures = signature_verifier(signature, call.env, console, policy, sha=target.sha, login=login)
    with ExitStack() as stack:
        engine = EngineOnDemand(call.env)
        stack.callback(engine.close)
        # The CLI pulls with the job's Docker config, plus the login inputs' credentials when given.
        cli_env = stack.enter_context(docker_config_with_login(call.env, options.login))
        puller = CliPuller(cli_env)
        starter = pull_starter(puller, options, policy, signed=signatures is not None, ahead=call.ahead)
        early = start_early(starter, options, target)
        if call.ahead is not None:
            call.ahead.cancel()  # unless the early pull was that one: the engine need not go on with it
        if early is not None:
            stack.callback(early.cancel)
        registry = open_registry(options.login, call.env, policy)
        stack.callback(registry.close)
        keys = Keys(options.label_namespace)
        consumer = Consumer(puller, engine, registry, policy, keys, options.check_freshness, console, options.platform)
        consumer.signatures = signatures
        consumer.early, consumer.start = early, starter
        consumed = _consume(consumer, options, target)
    if consumed is None:
        call.finish({"image": "", "digest": "", "source": "", "tag": "", "need-artifact": "true"})
        return
    call.finish({**consumed.outputs(), "need-artifact": "false"}, _summary(consumed, target))


def pull_starter(
    puller: CliPuller, options: ConsumeOptions, policy: RetryPolicy, *, signed: bool, ahead: PullAhead | None = None
) -> Callable[[ImageName, str], PendingPull] | None:
    """What starts a pull of the input's platform as soon as its digest is known; none when a signature must
    be verified before anything is pulled. The first pull it starts is the one started ``ahead`` when that
    runs the very same command."""
    if signed:
        return None

    def start(image: ImageName, digest: str) -> PendingPull:
        return puller.start(image, digest, policy.timeout_seconds, platform=options.platform, ahead=ahead)

    return start


def start_early(
    starter: Callable[[ImageName, str], PendingPull] | None, options: ConsumeOptions, target: Target
) -> PendingPull | None:
    """The pull of the digest given, started before anything else is asked of the registry; none when the
    registry is not to be asked, no digest is given, or nothing may be pulled yet (``starter`` is None)."""
    if starter is None or not target.digest or options.source is Source.ARTIFACT:
        return None
    return starter(target.image, target.digest)


def _consume(consumer: Consumer, options: ConsumeOptions, target: Target) -> Consumed | None:
    """The registry first, then the artifact; ``None`` when the artifact is needed but left for later."""
    if options.source is Source.ARTIFACT:
        return consumer.from_artifact(target, Path(options.artifact_path))
    try:
        return consumer.from_registry(target)
    except RegistryError as failure:
        if options.source is Source.REGISTRY:
            raise
        if options.artifact_path:
            consumer.console.warning(f"the registry could not serve the image ({failure}); using the artifact")
            return consumer.from_artifact(target, Path(options.artifact_path))
        if not options.defer_artifact:
            raise
        consumer.console.warning(f"the registry could not serve the image ({failure}); the artifact is needed")
        return None


def _summary(consumed: Consumed, target: Target) -> str:
    return (
        f"### buildonce: consumed `{consumed.image}`\n\n| | |\n|---|---|\n"
        f"| Source | {consumed.source} |\n| Digest | `{consumed.digest}` |\n"
        f"| Tag | `{consumed.tag or '-'}` |\n| Commit | `{target.sha or 'not checked'}` |\n"
    )
