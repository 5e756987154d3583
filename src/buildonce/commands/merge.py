"""``buildonce merge``: publish the legs' per-platform images as one image index, by digest.

Exactly the planned platforms, one leg each and all of one commit, are checked in the registry (each image's
config must be of its leg's platform and name this commit) before anything is written. The index lists them
in an order and with annotations that depend on the legs alone, so a re-run makes the same digest; it then
goes through the same publishing step as a single build: the immutable tags are checked (this index already
there: reused; another commit's: refused), the index is put under every tag in every repository, and every
tag and every child is verified.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from buildonce.commands import Invocation
from buildonce.commands.connect import open_registry, retry_policy
from buildonce.commands.origin import check_before_build, origin_of
from buildonce.commands.publish import Existing, Publisher, commit_of, run_all
from buildonce.commands.seams import RegistryAPI
from buildonce.commands.sign import sign_published
from buildonce.errors import InputError, RegistryError, VerificationError
from buildonce.labels import Keys, annotations_for
from buildonce.legs import Leg, MergePlan, config_platform, index_annotations, leg_of_index, parse_legs, plan_merge
from buildonce.oci import index_of
from buildonce.options import merge_options
from buildonce.plan import Plan, describe, make_plan
from buildonce.platforms import matches
from buildonce.references import ImageName

if TYPE_CHECKING:
    from buildonce.github.workflow import Console
    from buildonce.oci import Manifest
    from buildonce.retry import RetryPolicy


class MergeRegistryAPI(RegistryAPI, Protocol):
    """What the merge asks of the registry: the publishing step's, and the config of each leg's image."""

    def image_config(self, image: ImageName, reference: str, platform: str | None = None) -> dict[str, Any] | None: ...


@dataclass
class MergeReport:
    plan: Plan
    digest: str
    platform_digests: dict[str, str]
    reused: bool
    children: int
    notes: list[str] = field(default_factory=list)

    def outputs(self) -> dict[str, str]:
        return {
            **self.plan.outputs(),
            "digest": self.digest,
            "image": self.plan.images[0].with_digest(self.digest),
            "platform-digests": json.dumps(self.platform_digests, sort_keys=True, separators=(",", ":")),
            "pushed": "true",
            "reused": "true" if self.reused else "false",
            # A merge loads nothing and saves no artifact, whatever the plan of a build would decide.
            "load": "false",
            "artifact": "false",
            "artifact-name": "",
        }

    def summary(self) -> str:
        state = "reused" if self.reused else "merged and pushed"
        rows = [
            ("Index", f"`{self.digest}`"),
            ("Tags", ", ".join(f"`{tag}`" for tag in self.plan.tag_names)),
            *((f"`{platform}`", f"`{digest}`") for platform, digest in sorted(self.platform_digests.items())),
            ("Manifests listed", str(self.children)),
        ]
        lines = [f"### buildonce merge: {state} `{self.plan.images[0].with_digest(self.digest)}`", "", "| | |"]
        lines += ["|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
        lines += [f"\n> {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def run(call: Invocation) -> None:
    options = merge_options(call.inputs)
    console = call.console
    if call.env.get("COSIGN_PASSWORD"):  # masked before anything else is printed
        console.mask(call.env["COSIGN_PASSWORD"])
    context = call.context(options.plan.default_branch)
    plan = make_plan(context, options.plan, now=datetime.now(timezone.utc))
    console.info(describe(plan))
    legs = parse_legs(options.legs)
    merge = plan_merge(legs, plan.platforms, plan.subject.sha, plan.immutable_tag)
    if not plan.push.value:
        raise InputError(
            f"input 'push': the merge publishes the legs' image, but this run does not push ({plan.push.reason})."
        )
    policy = retry_policy(options.retry, console)
    origin = origin_of(context, plan.subject.sha, options.plan.label_namespace)
    check_before_build(options.sign, origin, call.env, console, pushing=True)
    registry = open_registry(options.login, call.env, policy)
    keys = Keys(options.plan.label_namespace)
    try:
        merger = Merger(
            plan,
            console,
            registry,
            policy,
            keys,
            Publisher.for_plan(plan, console, registry, policy, keys, allow_overwrite=options.allow_overwrite),
        )
        report = merger.merge(merge)
        # The index and each platform's image, as a single build's are: once per commit and key or identity.
        signed = sign_published(
            call.env,
            console,
            policy,
            registry,
            options=options.sign,
            origin=origin,
            digest=report.digest,
            images=merger.repositories,
            login=options.login,
        )
    finally:
        registry.close()
    console.info(f"digest: {report.digest}")
    call.finish({**report.outputs(), **signed.outputs()}, report.summary() + signed.summary_line() + "\n")


@dataclass
class Merger:
    plan: Plan
    console: Console
    registry: MergeRegistryAPI
    policy: RetryPolicy
    keys: Keys
    publisher: Publisher

    @property
    def repositories(self) -> list[ImageName]:
        return list(dict.fromkeys(ref.image for ref in self.plan.references))

    def merge(self, merge: MergePlan) -> MergeReport:
        labels = self.check_legs(merge)
        annotations = index_annotations(labels, self.plan.annotations)
        index = index_of(merge.entries(), annotations)
        # The outputs describe the image published: its labels are those the legs were built with.
        plan = replace(self.plan, labels=labels, annotations=tuple(annotations_for(labels, self.plan.annotations)))
        self.console.info(f"Index {index.digest} of {', '.join(leg.platform for leg in merge.legs)}")
        published = self.publisher.publish(partial(self.upload, index))
        if isinstance(published, Existing):
            return self.reuse(plan, published, index, merge)
        self.verify_children(index)
        return MergeReport(plan, index.digest, merge.platform_digests(), False, len(merge.entries()))

    # --- before anything is written -------------------------------------------------------------------------
    def check_legs(self, merge: MergePlan) -> dict[str, str]:
        """Every leg's manifests in every repository, each image's config of its platform and this commit;
        returns the labels of the first platform's image (every leg's image names the same commit)."""
        found: dict[str, dict[str, str]] = {}

        def check(leg: Leg) -> None:
            found[leg.platform] = self.check_leg(leg)

        run_all(check, list(merge.legs))
        return found[merge.legs[0].platform]

    def check_leg(self, leg: Leg) -> dict[str, str]:
        own = self.repositories[0]
        config = self._config(own, leg)
        built = config_platform(config)
        if not matches(leg.platform, config.get("os"), config.get("architecture"), config.get("variant")):
            raise VerificationError(
                f"the leg for {leg.platform} names {own.with_digest(leg.digest)}, whose config says {built or 'no'} "
                "platform. That leg built another platform than it was planned for; re-run it with "
                f"platforms: {leg.platform}. Nothing was tagged."
            )
        settings = config.get("config")
        raw_labels = settings.get("Labels") if isinstance(settings, dict) else None
        labels = {str(k): str(v) for k, v in raw_labels.items()} if isinstance(raw_labels, dict) else {}
        built_from = commit_of(self.plan.subject, labels, self.keys)
        if built_from != self.plan.subject.sha:
            raise VerificationError(
                f"the leg for {leg.platform} names {own.with_digest(leg.digest)}, built from "
                f"{built_from or 'an unknown commit (no revision label)'}, not from {self.plan.subject.sha}. "
                "Merge only this commit's legs. Nothing was tagged."
            )
        for image in self.repositories:
            for digest in (leg.digest, *(str(item["digest"]) for item in leg.attestations)):
                self._visible(image, digest, leg.platform)
        return labels

    def _config(self, image: ImageName, leg: Leg) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            config = self.registry.image_config(image, leg.digest)
            if config is None:
                raise _not_yet_visible(image, leg.digest, leg.platform)
            return config

        config, _ = self.policy.call(read, f"read the config of the {leg.platform} leg")
        return config

    def _visible(self, image: ImageName, digest: str, platform: str) -> None:
        """A manifest pushed moments ago by another runner may not be served yet: a 404 is retried for as long
        as the retry policy allows, then reported."""

        def look() -> None:
            if self.registry.resolve(image, digest) != digest:
                raise _not_yet_visible(image, digest, platform)

        self.policy.call(look, f"look up {image.with_digest(digest)}")

    # --- writing --------------------------------------------------------------------------------------------
    def upload(self, index: Manifest) -> str:
        """The index by digest in every repository, then under the immutable tags, then under the others."""
        with self.console.group(f"Push the index {index.digest}"):

            def put(image: ImageName) -> None:
                what = f"push {image.with_digest(index.digest)}"
                stored, _ = self.policy.call(partial(self.registry.put_manifest, image, index.digest, index), what)
                if stored != index.digest:
                    raise VerificationError(f"{image.registry} stored the index as {stored}, not {index.digest}.")

            run_all(put, self.repositories)
            own = self.publisher.own_references()
            self.publisher.tag_in_registry(own, index.digest)
            self.publisher.tag_in_registry([ref for ref in self.plan.references if ref not in own], index.digest)
        return index.digest

    def reuse(self, plan: Plan, existing: Existing, index: Manifest, merge: MergePlan) -> MergeReport:
        notes = []
        digests = merge.platform_digests()
        children = len(merge.entries())
        if existing.digest == index.digest:
            self.console.notice(
                f"{plan.immutable_tag} already holds {existing.digest}, this very index: nothing is pushed again.",
                title="Image reused",
            )
        else:
            # One image per commit: another build of this commit got there first; that one is reported.
            self.console.warning(
                f"{plan.immutable_tag} already holds {existing.digest}, another image of this commit, not the index "
                f"of these legs ({index.digest}); that image is kept and reported."
            )
            notes.append(f"The legs' index {index.digest} was not published: {existing.digest} was there first.")
            own = self.repositories[0]
            top, _ = self.policy.call(partial(self.registry.get_manifest, own, existing.digest), "read the image")
            digests, children = {}, 1
            if top is not None and top.is_index:
                body = top.json()
                children = len(body.get("manifests") or [])
                for platform in plan.platforms:
                    leg = leg_of_index(body, platform, commit="", immutable_tag="", images=())
                    if leg is not None:
                        digests[platform] = leg.digest
            plan = replace(plan, labels=existing.labels, annotations=tuple(annotations_for(existing.labels)))
        self.publisher.put_where_missing(existing.digest)
        self.publisher.verify(existing.digest)
        if existing.digest == index.digest:
            self.verify_children(index)
        return MergeReport(plan, existing.digest, digests, True, children, notes)

    def verify_children(self, index: Manifest) -> None:
        """Every manifest the index lists must be served, by its digest, in every repository."""
        digests = [str(entry["digest"]) for entry in index.json()["manifests"]]
        wrong: list[str] = []

        def look(image: ImageName) -> None:
            for digest in digests:
                held, _ = self.policy.call(partial(self.registry.resolve, image, digest), f"look up {digest}")
                if held != digest:
                    wrong.append(image.with_digest(digest))

        run_all(look, self.repositories)
        if wrong:
            raise VerificationError(f"the registry does not serve every manifest the index lists: {', '.join(wrong)}.")
        self.console.info(
            f"Verified in the registry: {len(digests)} manifest(s) of {index.digest} in {len(self.repositories)} "
            "repository(ies)"
        )


def _not_yet_visible(image: ImageName, digest: str, platform: str) -> RegistryError:
    return RegistryError(
        f"{image.with_digest(digest)}, of the {platform} leg, is not in the registry (yet). Did that leg push to "
        "this repository, and did it finish?",
        transient=True,
    )
