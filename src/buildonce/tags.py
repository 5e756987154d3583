"""The tag policy: which tags a commit gets, and the one immutable tag that names it.

Build and consume both call ``subject_of`` and ``plan_tags``, so the tag a downstream job looks for is
computed by the same code that pushed it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buildonce.errors import ContextError, InputError
from buildonce.references import is_valid_tag

if TYPE_CHECKING:
    from buildonce.github.context import Context

MAX_TAG_LENGTH = 128
FALLBACK_NAME = "branch"

_NOT_ALLOWED = re.compile(r"[^a-z0-9-]")
_DASHES = re.compile(r"-{2,}")
# ASCII digits only: '\d' also matches Arabic-Indic and other digits, so a git tag spelled in them would
# read as 1.2.3 and take the tags of the real v1.2.3.
_SEMVER = re.compile(
    r"v?(?P<major>0|[1-9][0-9]*)\.(?P<minor>0|[1-9][0-9]*)\.(?P<patch>0|[1-9][0-9]*)"
    r"(?:-(?P<pre>(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+(?P<build>[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
_HEX = frozenset("0123456789abcdef")
_SANITIZED = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_PR_NAME = re.compile(r"pr-[0-9]+")


def sanitize(name: str, max_length: int = MAX_TAG_LENGTH) -> str:
    """Turn a branch or tag name into tag characters, at most ``max_length`` long.

    Lower-case; every character outside ``[a-z0-9-]`` (``/``, ``_``, ``.``, ``#``, anything non-ASCII)
    becomes ``-``; runs of ``-`` collapse; ``-`` is trimmed from both ends, again after truncating.
    """
    text = _NOT_ALLOWED.sub("-", name.lower())
    text = _DASHES.sub("-", text).strip("-")
    text = text[:max_length].rstrip("-")
    return text or FALLBACK_NAME[:max_length]


def _room(prefix: str, suffix: str, reserved: int = 0) -> int:
    """What a name may take of a tag once the prefix, the suffix and ``reserved`` characters are counted.

    Every tag derived from a name (a branch, a merge queue's ref, a git tag, a version) is cut to this;
    only the prefix and suffix, which the user chose, can leave too little."""
    room = MAX_TAG_LENGTH - len(prefix) - len(suffix) - reserved
    if room < 1:
        raise InputError(
            f"input 'tag-prefix' ({len(prefix)} characters) and 'tag-suffix' ({len(suffix)}) leave no room for "
            f"the name in a {MAX_TAG_LENGTH}-character tag. Shorten them."
        )
    return room


def name_sha_tag(name: str, sha: str, *, prefix: str = "", suffix: str = "") -> str:
    """``{sanitized name}-{sha}``, truncated so that the whole tag, prefix and suffix included, fits 128."""
    return f"{prefix}{sanitize(name, _room(prefix, suffix, len(sha) + 1))}-{sha}{suffix}"


def cut(text: str, max_length: int) -> str:
    """A tag's name part cut to ``max_length``, as ``sanitize`` cuts a branch name: no '.' or '-' left
    dangling at the cut."""
    return text if len(text) <= max_length else text[:max_length].rstrip(".-")


@dataclass(frozen=True)
class SemVer:
    """The parts as written (the grammar allows no leading zeros, so the text is the number), never
    converted: a git tag may carry more digits than ``int()`` reads."""

    major: str
    minor: str
    patch: str
    prerelease: str
    build: str

    @property
    def version(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += f"-{self.prerelease}"
        if self.build:
            # '+' is not a tag character; metadata tools write build metadata after a '-'.
            text += f"-{self.build}"
        return text


def parse_semver(name: str) -> SemVer | None:
    match = _SEMVER.fullmatch(name)
    if match is None:
        return None
    return SemVer(
        major=match["major"],
        minor=match["minor"],
        patch=match["patch"],
        prerelease=match["pre"] or "",
        build=match["build"] or "",
    )


class Kind(enum.Enum):
    PULL_REQUEST = "pull_request"
    DEFAULT_BRANCH = "default_branch"
    BRANCH = "branch"
    TAG = "tag"
    SCHEDULE = "schedule"
    MERGE_GROUP = "merge_group"


class PrSha(enum.Enum):
    HEAD = "head"
    MERGE = "merge"


@dataclass(frozen=True)
class Subject:
    """What an image is for: a kind of build, the commit its tags name, and the ref it came from.

    ``sha`` is the commit the immutable tag names (a pull request's head by default);
    ``revision`` is the commit actually built (``GITHUB_SHA``), when known.
    """

    kind: Kind
    sha: str
    revision: str
    ref_name: str
    pr_number: int | None = None
    pr_head_sha: str = ""
    ambiguous_ref: bool = False
    """True when the ref may be a branch or a tag (a ``workflow_run`` only says ``head_branch``)."""


def _ref_kind(ref: str, default_branch: str) -> tuple[Kind, str]:
    if ref.startswith("refs/tags/"):
        return Kind.TAG, ref[len("refs/tags/") :]
    name = ref[len("refs/heads/") :] if ref.startswith("refs/heads/") else ref
    if default_branch and name == default_branch:
        return Kind.DEFAULT_BRANCH, name
    return Kind.BRANCH, name


def subject_of(context: Context, *, pr_sha: PrSha = PrSha.HEAD, pr_number: int | None = None) -> Subject:
    """Work out what is being built (or, for ``workflow_run``, what the triggering run built)."""
    event = context.event_name
    if event in ("pull_request", "pull_request_target"):
        pr = context.pull_request
        if pr is None:
            raise ContextError(f"the {event} event carries no pull request. Check the event payload.")
        return Subject(
            kind=Kind.PULL_REQUEST,
            sha=pr.head_sha if pr_sha is PrSha.HEAD else context.sha,
            revision=context.sha,
            ref_name=pr.head_ref,
            pr_number=pr.number,
            pr_head_sha=pr.head_sha,
        )
    if event == "workflow_run":
        return _upstream_subject(context, pr_number=pr_number)
    if event == "schedule":
        _, name = _ref_kind(context.ref, context.default_branch)
        return Subject(kind=Kind.SCHEDULE, sha=context.sha, revision=context.sha, ref_name=name)
    if event == "merge_group":
        ref = context.merge_group_head_ref.removeprefix("refs/heads/")
        return Subject(kind=Kind.MERGE_GROUP, sha=context.sha, revision=context.sha, ref_name=ref)
    # push, workflow_dispatch and release all name a branch or a tag in GITHUB_REF.
    if event == "release" and not context.ref.startswith("refs/tags/"):
        raise ContextError("the release event names no tag (release.tag_name). Check the event payload.")
    kind, name = _ref_kind(context.ref, context.default_branch)
    if context.ref.startswith("refs/pull/"):
        raise ContextError(
            f"GITHUB_REF {context.ref!r} is a pull request ref on a {event} event; "
            "trigger on pull_request to build pull requests."
        )
    return Subject(kind=kind, sha=context.sha, revision=context.sha, ref_name=name)


def _upstream_subject(context: Context, *, pr_number: int | None) -> Subject:
    upstream = context.upstream
    if upstream is None:
        raise ContextError("the workflow_run event carries no workflow_run object. Check the event payload.")
    sha = upstream.head_sha
    if upstream.event in ("pull_request", "pull_request_target"):
        number = pr_number or upstream.pull_request_number
        if number is None:
            raise ContextError(
                "the triggering run was a pull request but workflow_run.pull_requests names none for "
                f"{sha[:7]} (GitHub leaves it empty for pull requests from forks). "
                "Give the number with the 'pr-number' input."
            )
        # The triggering run's GITHUB_SHA (the merge commit) is not in this payload.
        return Subject(
            kind=Kind.PULL_REQUEST,
            sha=sha,
            revision="",
            ref_name=upstream.head_branch,
            pr_number=number,
            pr_head_sha=sha,
        )
    if upstream.event == "schedule":
        return Subject(kind=Kind.SCHEDULE, sha=sha, revision=sha, ref_name=upstream.head_branch)
    if upstream.event == "merge_group":
        return Subject(kind=Kind.MERGE_GROUP, sha=sha, revision=sha, ref_name=upstream.head_branch)
    if upstream.event == "release":
        return Subject(kind=Kind.TAG, sha=sha, revision=sha, ref_name=upstream.head_branch)
    if upstream.event not in ("push", "workflow_dispatch"):
        raise ContextError(
            f"the triggering run was a {upstream.event or 'unknown'} event, which buildonce does not build. "
            "Give the image with the 'image' and 'digest' inputs instead."
        )
    kind, name = _ref_kind(upstream.head_branch, context.default_branch)
    # head_branch holds a tag's name for tag pushes, with nothing to tell the two apart.
    return Subject(kind=kind, sha=sha, revision=sha, ref_name=name, ambiguous_ref=kind is Kind.BRANCH)


@dataclass(frozen=True)
class TagPolicy:
    sha_length: int = 7
    prefix: str = ""
    suffix: str = ""


@dataclass(frozen=True)
class TagPlan:
    immutable: str
    """The tag that names this commit and is never moved to another commit."""
    tags: tuple[str, ...]
    """Every planned tag, the immutable one included, in a stable order."""
    version: str
    candidates: tuple[str, ...] = ()
    """Where a consumer looks, in order: the immutable tag and any tag the subject may have been pushed
    under instead (a ``workflow_run`` cannot tell a branch push from a tag push)."""


def plan_tags(subject: Subject, policy: TagPolicy) -> TagPlan:
    sha = subject.sha[: policy.sha_length]
    prefix, suffix = policy.prefix, policy.suffix
    sha_tag = f"{prefix}sha-{sha}{suffix}"

    if subject.kind is Kind.PULL_REQUEST:
        immutable = f"{prefix}pr-{subject.pr_number}-{sha}{suffix}"
        plan = TagPlan(immutable, (immutable,), f"pr-{subject.pr_number}")
    elif subject.kind is Kind.DEFAULT_BRANCH:
        plan = TagPlan(sha_tag, ("latest", sha_tag), sanitize(subject.ref_name))
    elif subject.kind is Kind.SCHEDULE:
        plan = TagPlan(sha_tag, (f"{prefix}nightly{suffix}", sha_tag), "nightly")
    elif subject.kind is Kind.TAG:
        plan = _git_tag_plan(subject.ref_name, sha_tag, prefix, suffix)
    else:  # BRANCH, MERGE_GROUP
        immutable = name_sha_tag(subject.ref_name, sha, prefix=prefix, suffix=suffix)
        plan = TagPlan(immutable, (immutable,), sanitize(subject.ref_name))

    candidates = (plan.immutable, sha_tag) if subject.ambiguous_ref else (plan.immutable,)
    for tag in (*plan.tags, *candidates):
        if not is_valid_tag(tag):
            # Names are cut to fit, so only the prefix and suffix (with the sha) can make a tag too long.
            raise InputError(
                f"the planned tag {tag!r} is not a valid tag: input 'tag-prefix' ({len(prefix)} characters) "
                f"and 'tag-suffix' ({len(suffix)}) leave it longer than {MAX_TAG_LENGTH}. Shorten them."
            )
    return TagPlan(plan.immutable, plan.tags, plan.version, candidates)


def _git_tag_plan(name: str, sha_tag: str, prefix: str, suffix: str) -> TagPlan:
    room = _room(prefix, suffix)
    semver = parse_semver(name)
    if semver is None:
        tag = f"{prefix}{sanitize(name, room)}{suffix}"
        return TagPlan(sha_tag, (tag, sha_tag), sanitize(name))
    names = [semver.version]
    if not semver.prerelease:
        names.append(f"{semver.major}.{semver.minor}")
        if semver.major != "0":
            names.append(semver.major)
    # The version label keeps the whole version; only the tags are cut.
    tags = tuple(dict.fromkeys(f"{prefix}{cut(item, room)}{suffix}" for item in names))
    return TagPlan(sha_tag, (*tags, sha_tag), semver.version)


def named_commit(tag: str, policy: TagPolicy) -> str | None:
    """The abbreviated commit ``tag`` names if it has the shape of one of this policy's immutable tags.

    Every immutable tag is ``{prefix}{name}-{sha}{suffix}``, whether ``sha-…``, ``pr-<number>-…`` or
    ``<branch>-…``: the name in sanitized characters, the sha ``sha-length`` lower-case hex digits. Any
    planned tag of that shape could be another commit's immutable tag, whichever input it came from.
    """
    prefix, suffix = policy.prefix, policy.suffix
    if len(tag) <= len(prefix) + len(suffix) or not (tag.startswith(prefix) and tag.endswith(suffix)):
        return None
    name, dash, sha = tag[len(prefix) : len(tag) - len(suffix)].rpartition("-")
    if not dash or len(sha) != policy.sha_length or not set(sha) <= _HEX or not _SANITIZED.fullmatch(name):
        return None
    return sha


def immutable_name(tag: str, policy: TagPolicy) -> str | None:
    """The name part of a tag of the shape of this policy's immutable tags: ``sha``, ``pr-<number>`` or a
    sanitized branch name; None for a tag of any other shape."""
    if named_commit(tag, policy) is None:
        return None
    return tag[len(policy.prefix) : len(tag) - len(policy.suffix)].rpartition("-")[0]


def immutable_shape(tag: str, policy: TagPolicy) -> str:
    """How an immutable-shaped tag reads, for an error message: ``sha-<commit>``, ``pr-<number>-<commit>``
    or ``<branch>-<commit>``."""
    name = tag[len(policy.prefix) : len(tag) - len(policy.suffix)].rpartition("-")[0]
    shape = "<branch>-<commit>"
    if name == "sha":
        shape = "sha-<commit>"
    elif _PR_NAME.fullmatch(name):
        shape = "pr-<number>-<commit>"
    return f"{policy.prefix}{shape}{policy.suffix}"
