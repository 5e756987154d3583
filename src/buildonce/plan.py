"""The plan: every tag, label and decision for one build, computed without touching Docker."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from buildonce.errors import InputError
from buildonce.github.context import Context
from buildonce.labels import OCI, annotations_for, computed_labels, merge_labels
from buildonce.options import PlanOptions
from buildonce.references import ImageName, Reference
from buildonce.tags import Kind, Subject, TagPlan, TagPolicy, immutable_shape, named_commit, plan_tags, subject_of

DEPENDABOT = "dependabot[bot]"
_LOCAL_KINDS = frozenset({Kind.PULL_REQUEST, Kind.BRANCH, Kind.MERGE_GROUP})


@dataclass(frozen=True)
class Decision:
    value: bool
    reason: str


@dataclass(frozen=True)
class Plan:
    subject: Subject
    images: tuple[ImageName, ...]
    tag_plan: TagPlan
    references: tuple[Reference, ...]
    labels: dict[str, str]
    annotations: tuple[str, ...]
    platforms: tuple[str, ...]
    push: Decision
    load: Decision
    artifact: Decision
    artifact_name: str
    created_from_clock: bool
    default_branch: str
    """As the payload (or the default-branch input) names it; empty when unknown."""
    immutable_tags: frozenset[str] = frozenset()
    """Every planned tag that names this commit as an immutable tag does: the planned immutable tag and
    any other of that shape (a git tag ``sha-<this commit>``, a metadata-action ``type=sha`` tag)."""

    @property
    def immutable_tag(self) -> str:
        return self.tag_plan.immutable

    @property
    def version(self) -> str:
        return self.labels.get(f"{OCI}.version", self.tag_plan.version)

    @property
    def tag_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(ref.tag for ref in self.references))

    @property
    def immutable_references(self) -> tuple[Reference, ...]:
        """Every reference the immutable-tag check looks at, the planned immutable tag's first."""
        own = [ref for ref in self.references if ref.tag == self.immutable_tag]
        also = [ref for ref in self.references if ref.tag != self.immutable_tag and ref.tag in self.immutable_tags]
        return (*own, *also)

    def warnings(self) -> list[str]:
        """What the log should say about guesses the plan had to make."""
        said = []
        if self.created_from_clock:
            said.append(
                "the commit time is unknown (no head_commit in the payload, no checkout of it in the workspace, "
                "no SOURCE_DATE_EPOCH); the created label uses the clock, so a re-run will not reproduce the "
                "same image"
            )
        if self.subject.kind is Kind.BRANCH and not self.default_branch:
            said.append(
                f"the default branch is unknown (the event payload has no repository.default_branch), so "
                f"{self.subject.ref_name!r} is tagged as a feature branch; if it is the default branch, set the "
                "default-branch input"
            )
        return said

    def metadata(self) -> dict[str, object]:
        """The same shape as docker/metadata-action's ``json`` output."""
        return {
            "tags": [str(ref) for ref in self.references],
            "labels": self.labels,
            "annotations": list(self.annotations),
        }

    def outputs(self) -> dict[str, str]:
        return {
            "tags": "\n".join(str(ref) for ref in self.references),
            "tag-names": "\n".join(self.tag_names),
            "labels": "\n".join(f"{key}={value}" for key, value in self.labels.items()),
            "annotations": "\n".join(self.annotations),
            "version": self.version,
            "immutable-tag": self.immutable_tag,
            "json": json.dumps(self.metadata(), separators=(",", ":")),
            "push": _flag(self.push.value),
            "load": _flag(self.load.value),
            "artifact": _flag(self.artifact.value),
            "artifact-name": self.artifact_name if self.artifact.value else "",
        }


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _same_repository(head: str, base: str) -> bool:
    """Whether code comes from the repository itself; an unknown side (a deleted fork) counts as a fork."""
    return bool(head) and bool(base) and head.lower() == base.lower()


def foreign_code(context: Context) -> str:
    """Why this run builds code that ``push: auto`` must not push, or "" when it may.

    A fork's code is never pushed, whatever event brings it: ``pull_request`` and ``pull_request_target``
    name the head repository, a ``workflow_run`` the triggering run's. Dependabot's is not pushed either:
    GitHub gives the runs it starts a read-only GITHUB_TOKEN (``pull_request_target`` and re-runs by
    someone else included), and the same rule holds for its pull requests brought by ``workflow_run``.
    A ``merge_group`` is pushed: GitHub makes its commit in this repository, from pull requests someone
    with write access queued after review, and that commit is what the default branch gets next.
    """
    repository = context.repository.full_name
    pr, upstream = context.pull_request, context.upstream
    fork_of = ""
    if pr is not None and not _same_repository(pr.head_repo, repository):
        fork_of = f"pull request #{pr.number} comes from the fork {pr.head_repo or '(deleted or unknown)'}"
    elif upstream is not None and not _same_repository(upstream.head_repo, repository):
        fork_of = (
            f"the triggering {upstream.event or 'run'} ran code of the fork "
            f"{upstream.head_repo or '(deleted or unknown)'}"
        )
    if fork_of:
        return f"{fork_of}, and a fork's code is never pushed by default; the image is kept as an artifact instead"
    actors = {context.actor, *(upstream.actors if upstream else ()), pr.author if pr else ""}
    if DEPENDABOT in actors:
        return (
            "Dependabot's runs get a read-only GITHUB_TOKEN and its code is not pushed by default; the image is "
            "kept as an artifact instead (set push: true if your registry credentials allow it)"
        )
    return ""


def _push_decision(context: Context, options: PlanOptions) -> Decision:
    if options.push.value != "auto":
        return Decision(options.push.decide(True), "set by the 'push' input")
    reason = foreign_code(context)
    return Decision(False, reason) if reason else Decision(True, "push by default")


def _immutable_tags(subject: Subject, policy: TagPolicy, sourced: dict[str, str]) -> frozenset[str]:
    """The planned tags that name this commit as immutable tags do; any naming another commit is refused.

    ``sourced`` maps every planned tag to where it came from, for the error. A tag of that shape names
    this build when its sha is the one the immutable tag names or the commit built (a pull request's
    merge commit, which metadata-action's ``type=sha`` names)."""
    length = policy.sha_length
    ours = {sha[:length] for sha in (subject.sha, subject.revision) if sha}
    found = set()
    for tag, source in sourced.items():
        named = named_commit(tag, policy)
        if named is None:
            continue
        if named in ours:
            found.add(tag)
            continue
        raise InputError(
            f"the planned tag {tag!r} ({source}) has the shape of an immutable tag, "
            f"{immutable_shape(tag, policy)}, and names the commit {named}, but this build is of "
            f"{subject.sha[:12]}: pushing it would move that commit's immutable tag to this image. "
            f"{_fix_for(source, subject, length)}"
        )
    return frozenset(found)


def _fix_for(source: str, subject: Subject, length: int) -> str:
    if source.startswith("the git tag"):
        return (
            f"Rename the git tag: a name ending in '-' and {length} hex digits reads as a commit's tag "
            "(sha-<commit>, pr-<number>-<commit>, <branch>-<commit>)."
        )
    if "metadata-json" in source:
        return "Remove it from docker/metadata-action's tags, or have it name this build's commit."
    return f"Remove it from the 'tags' input, or have it name this build's commit ({subject.sha[:length]})."


def make_plan(context: Context, options: PlanOptions, *, now: datetime) -> Plan:
    """Plan everything for the context; ``now`` serves as ``created`` only when the commit time is unknown."""
    subject = subject_of(context, pr_sha=options.pr_sha)
    tag_plan = plan_tags(subject, options.policy)
    tags = tuple(dict.fromkeys((*tag_plan.tags, *options.extra_tags)))
    references = [Reference(image, tag) for image in options.images for tag in tags]
    references += [*options.metadata.tags, *options.extra_references]
    derived = f"the git tag {subject.ref_name!r}" if subject.kind is Kind.TAG else "planned from the event"
    sourced = {
        **{ref.tag: "input 'tags'" for ref in options.extra_references},
        **{ref.tag: "input 'metadata-json'" for ref in options.metadata.tags},
        **dict.fromkeys(options.extra_tags, "input 'tags'"),
        **dict.fromkeys(tag_plan.tags, derived),
    }
    immutable_tags = _immutable_tags(subject, options.policy, sourced)
    created = context.commit_time or now

    labels = merge_labels(
        computed_labels(context, subject, version=tag_plan.version, created=created, namespace=options.label_namespace),
        options.metadata.labels or {},
        options.labels,
    )
    annotations = annotations_for(labels, (*options.metadata.annotations, *options.annotations))

    push = _push_decision(context, options)
    local = subject.kind in _LOCAL_KINDS
    artifact_auto = local or not push.value
    artifact = Decision(
        options.artifact.decide(artifact_auto),
        "set by the 'artifact' input"
        if options.artifact.value != "auto"
        else (
            "pull request and branch builds keep a fallback artifact"
            if local
            else "not pushed, so kept as an artifact"
            if not push.value
            else "not needed for this build"
        ),
    )
    load = Decision(
        options.load.decide(local) or artifact.value,
        "needed for the artifact"
        if artifact.value
        else ("set by the 'load' input" if options.load.value != "auto" else "pull request and branch builds load"),
    )
    artifact_name = options.artifact_name or f"{options.images[0].basename}-{tag_plan.immutable}"
    return Plan(
        subject=subject,
        images=options.images,
        tag_plan=tag_plan,
        references=tuple(dict.fromkeys(references)),
        labels=labels,
        annotations=tuple(annotations),
        platforms=options.platforms,
        push=push,
        load=load,
        artifact=artifact,
        artifact_name=artifact_name,
        created_from_clock=context.commit_time is None,
        default_branch=context.default_branch,
        immutable_tags=immutable_tags | {tag_plan.immutable},
    )


def describe(plan: Plan) -> str:
    """A readable plan for the log."""
    subject = plan.subject
    lines = [
        f"Building {subject.kind.value.replace('_', ' ')} {_what(subject)} at {subject.sha[:12]}",
        f"  immutable tag: {plan.immutable_tag}",
        *(f"  also checked as immutable: {tag}" for tag in sorted(plan.immutable_tags - {plan.immutable_tag})),
        "  references:",
        *(f"    {ref}" for ref in plan.references),
        f"  push: {_flag(plan.push.value)} ({plan.push.reason})",
        f"  load: {_flag(plan.load.value)} ({plan.load.reason})",
        f"  artifact: {_flag(plan.artifact.value)}"
        + (f" as {plan.artifact_name}" if plan.artifact.value else "")
        + f" ({plan.artifact.reason})",
        "  labels:",
        *(f"    {key}={value}" for key, value in plan.labels.items()),
    ]
    if plan.platforms:
        lines.insert(3, f"  platforms: {', '.join(plan.platforms)}")
    return "\n".join(lines)


def _what(subject: Subject) -> str:
    if subject.pr_number is not None:
        return f"#{subject.pr_number} ({subject.ref_name})" if subject.ref_name else f"#{subject.pr_number}"
    return subject.ref_name
