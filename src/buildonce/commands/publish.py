"""The publishing step: put one image, by digest, under a plan's references, and prove the registry serves it.

Whatever made the image (a build, later a merge of per-platform builds or a promotion), publishing is the same:
the immutable tags are checked (a tag holding another commit's image fails the run, one holding this commit's
image means it is reused), the image is put under every reference, and every reference is verified in its
registry. Only the registry is asked; the engine is the caller's business.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from buildonce.errors import ImmutableTagError, RegistryError, VerificationError
from buildonce.labels import Keys, image_commit
from buildonce.references import ImageName, Reference
from buildonce.tags import Subject

if TYPE_CHECKING:
    from buildonce.commands.seams import RegistryAPI
    from buildonce.github.workflow import Console
    from buildonce.oci import Manifest
    from buildonce.plan import Plan
    from buildonce.retry import RetryPolicy

PUSH_WORKERS = 4
T = TypeVar("T")


def commit_of(subject: Subject, labels: Mapping[str, str], keys: Keys) -> str:
    """The commit an image was built for, as its labels tell, in the terms the subject's tag uses."""
    return image_commit(labels, keys, pr_head=subject.pr_number is not None and subject.sha == subject.pr_head_sha)


@dataclass(frozen=True)
class Existing:
    """The image an immutable tag already holds, built from this very commit."""

    digest: str
    labels: dict[str, str]


@dataclass(frozen=True)
class Published:
    digest: str
    seconds: float
    """How long putting the image under the references took (the check and the verify left out)."""


class TwinPushedError(Exception):
    """Raised by an upload: what it pushed under an immutable name is another build's image of this commit."""

    def __init__(self, existing: Existing) -> None:
        super().__init__(existing.digest)
        self.existing = existing


Upload = Callable[[], str]
"""Puts the image under every reference, immutable ones first, and returns its digest; raises
TwinPushedError when another build of this commit took the immutable name meanwhile."""


@dataclass
class Publisher:
    subject: Subject
    immutable_tag: str
    references: tuple[Reference, ...]
    immutable: tuple[Reference, ...]
    """Every reference of an immutable tag's shape: they must never be moved to another commit's image."""
    console: Console
    registry: RegistryAPI
    policy: RetryPolicy
    keys: Keys
    allow_overwrite: bool = False
    rebuild: bool = False

    @classmethod
    def for_plan(
        cls,
        plan: Plan,
        console: Console,
        registry: RegistryAPI,
        policy: RetryPolicy,
        keys: Keys,
        *,
        allow_overwrite: bool = False,
        rebuild: bool = False,
    ) -> Publisher:
        return cls(
            plan.subject,
            plan.immutable_tag,
            tuple(plan.references),
            tuple(plan.immutable_references),
            console,
            registry,
            policy,
            keys,
            allow_overwrite,
            rebuild,
        )

    def own_references(self) -> list[Reference]:
        """This commit's immutable reference in each repository: names no build of another commit uses."""
        return [ref for ref in self.references if ref.tag == self.immutable_tag]

    # --- the step ---------------------------------------------------------------------------------------
    def publish(self, source: str | Upload) -> Published | Existing:
        """Put the image under every reference and verify it; ``source`` is a digest already in one of the
        repositories, or an upload that pushes it. Returns the image this commit's immutable tags hold when
        another build of it got there first (the caller reports that one instead)."""
        # The tags may have been looked at before; another build may have pushed to them since.
        existing = None if self.rebuild else self.check_immutable_tags()
        if existing is not None:
            self.console.info(f"{self.immutable_tag} was pushed by another build of this commit meanwhile.")
            return existing
        started = time.monotonic()
        if isinstance(source, str):
            digest = source
            self.put_where_missing(digest)
        else:
            try:
                digest = source()
            except TwinPushedError as twin:
                return twin.existing
        seconds = time.monotonic() - started
        self.verify(digest)
        return Published(digest, seconds)

    def check_immutable_tags(self) -> Existing | None:
        """Fail if an immutable tag holds another commit's image; return this commit's image if one is
        already there (so there is nothing to build: the missing tags and repositories get that image).

        Every reference of an immutable tag's shape is checked, the plan's own immutable tag in each
        repository and any other planned tag that names this commit.
        """
        subject = self.subject
        ours: dict[str, dict[str, str]] = {}
        overwrite = False
        # Looked up all at once: this check runs again just before the push, where each round trip counts.
        held: dict[Reference, str | None] = {}
        run_all(lambda ref: held.__setitem__(ref, self.resolve(ref)), self.immutable)
        for ref in self.immutable:
            digest = held[ref]
            if digest is None:
                continue
            labels = self.labels_of(ref, digest)
            built_from = commit_of(subject, labels, self.keys)
            if built_from == subject.sha:
                ours.setdefault(digest, labels)
                continue
            other = built_from or "an unknown commit (the image has no revision label)"
            if not self.allow_overwrite:
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

    def put_where_missing(self, digest: str) -> None:
        """Put ``digest`` under every reference that does not hold it yet, registry-side: copied by digest into
        a repository that lacks it, then its manifest put under the tag."""
        missing = [ref for ref in self.references if self.resolve(ref) != digest]
        if missing:
            with self.console.group(f"Tag: {len(missing)} reference(s)"):
                self.copy_where_missing(missing, digest)
                self.tag_in_registry(missing, digest)

    def copy_where_missing(self, references: Sequence[Reference], digest: str) -> None:
        """Copy the image by digest into each repository of ``references`` that lacks it, from one that has it."""
        repositories = list(dict.fromkeys(ref.image for ref in self.references))
        holders = [image for image in repositories if self.resolve(Reference(image, digest)) == digest]
        if not holders:
            raise VerificationError(f"{digest} is in none of the repositories any more.")
        for image in dict.fromkeys(ref.image for ref in references):
            if image in holders:
                continue
            self.policy.call(partial(self.registry.copy_image, holders[0], digest, image), f"copy {digest} to {image}")
            self.console.info(f"Copied {holders[0].with_digest(digest)} to {image}")

    def tag_in_registry(self, references: Sequence[Reference], digest: str) -> None:
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

        run_all(tag, references)

    def verify(self, digest: str) -> None:
        """Every tag of every image must resolve, in the registry itself, to the digest reported.

        A mutable tag that another build of a newer push moved on meanwhile is reported, not failed: it is
        expected to move. An immutable tag that does not serve the digest fails the run.
        """
        found: dict[Reference, str | None] = {}

        def look(ref: Reference) -> None:
            found[ref] = self.resolve(ref)

        run_all(look, self.references)
        immutable = set(self.immutable)
        wrong = []
        for ref in self.references:
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
        self.console.info(f"Verified in the registry: {len(self.references)} reference(s) → {digest}")

    # --- asking the registry --------------------------------------------------------------------------
    def resolve(self, ref: Reference) -> str | None:
        digest, _ = self.policy.call(lambda: self.registry.resolve(ref.image, ref.tag), f"look up {ref}")
        return digest

    def labels_of(self, ref: Reference, digest: str) -> dict[str, str]:
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

    def _moved_by_another_commit(self, ref: Reference, held: str) -> bool:
        built_from = commit_of(self.subject, self.labels_of(ref, held), self.keys)
        return bool(built_from) and built_from != self.subject.sha


def run_all(function: Callable[[T], None], items: Sequence[T]) -> None:
    """Run ``function`` on every item, concurrently when there are several; the first error is raised."""
    if len(items) <= 1:
        for item in items:
            function(item)
        return
    with ThreadPoolExecutor(max_workers=min(PUSH_WORKERS, len(items))) as pool:
        for future in [pool.submit(function, item) for item in items]:
            future.result()
