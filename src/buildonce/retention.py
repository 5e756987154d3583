"""The retention policy for prune, pure: which tags and digests of one repository to keep, untag or delete.

A tag is transient only when its grammar (``tags``) and its image's labels (``labels``) agree that buildonce
pushed it for a pull request or a branch other than the default one; everything else is kept. The decision is
a mark and sweep over the repository's digest graph: roots are the kept tags, their closure (an index's
children, a manifest's subject, the referrers of a digest, the cosign and fallback tags named after it) is
marked, and only what stays unmarked is deleted, each image before its children and its children before the
referrers of the image, so that a run cut short never leaves a kept tag missing what it needs.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from buildonce.labels import CREATED, REVISION, Keys
from buildonce.tags import TagPolicy, immutable_name, name_sha_tag, named_commit, parse_semver

COSIGN_TAG = re.compile(r"sha256-(?P<hex>[0-9a-f]{64})(?:\.(?:sig|att|sbom))?")
"""cosign's legacy ``.sig``/``.att``/``.sbom`` tags and the OCI referrers fallback tag, named after a digest."""
BUILDKEY_TAG = re.compile(r"buildkey-[0-9a-f]{64}")
"""A build-key lookup tag: another name of the image it points at, never a reason to keep it."""
ALWAYS_PROTECTED = ("latest", "nightly")
_PR_NAME = re.compile(r"pr-(?P<number>[1-9][0-9]*)")


class Action(enum.Enum):
    DELETE = "delete"
    UNTAG = "untag"
    KEEP = "keep"


@dataclass(frozen=True)
class Node:
    """One manifest of the repository as read from it."""

    digest: str
    media_type: str = ""
    size: int = 0
    children: tuple[str, ...] = ()
    """The manifests an index lists."""
    subject: str = ""
    """The digest an OCI referrer (a signature, an attestation) names as its ``subject``."""
    blobs: tuple[tuple[str, int], ...] = ()
    """Config and layers (digest, size), for the bytes a delete frees."""


@dataclass(frozen=True)
class Snapshot:
    """What prune read of one repository: every tag's digest, the manifests reachable from them, the labels
    of the images it had to classify, and what the referrers API answered (where it answers)."""

    tags: Mapping[str, str]
    nodes: Mapping[str, Node]
    labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    referrers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Rules:
    now: datetime
    default_branch: str
    pr_max_age: timedelta = timedelta(hours=24)
    branch_max_age: timedelta = timedelta(days=7)
    keep_newest: int = 1
    min_age: timedelta = timedelta(hours=2)
    closed_prs: frozenset[int] = frozenset()
    deleted_branches: frozenset[str] = frozenset()
    protect: tuple[str, ...] = ()
    policy: TagPolicy = field(default_factory=TagPolicy)
    keys: Keys = field(default_factory=Keys)


@dataclass(frozen=True)
class Decision:
    """What becomes of one digest, with every tag it has and the rule that decided."""

    digest: str
    tags: tuple[str, ...]
    action: Action
    rule: str
    untag: tuple[str, ...] = ()
    """For ``UNTAG``: the tags to remove while the digest stays."""
    size: int = 0

    def as_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "digest": self.digest,
            "tags": list(self.tags),
            "action": self.action.value,
            "rule": self.rule,
        }
        if self.untag:
            entry["untag"] = list(self.untag)
        if self.size:
            entry["bytes"] = self.size
        return entry


@dataclass(frozen=True)
class Step:
    """One registry change: delete ``digest``, or (with ``tag``) remove only that tag."""

    digest: str
    tag: str = ""
    why: str = ""


@dataclass(frozen=True)
class Plan:
    decisions: tuple[Decision, ...]
    groups: tuple[tuple[Step, ...], ...]
    """The changes in order, one group per image: its top-level digest, then its unmarked children, then its
    orphaned referrers; or one untag. A run stops only between groups."""
    kept: tuple[str, ...]
    """Every tag that stays."""
    skipped: tuple[tuple[str, str], ...]
    """Tags kept because buildonce cannot confirm they are transient, with the reason."""
    marked: frozenset[str]
    reclaimable: int
    """Bytes of blobs and manifests only the deleted digests use."""

    @property
    def changes(self) -> int:
        return sum(len(group) for group in self.groups)


# --- classification -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    """A pull request or a branch: images of one stream are counted together for keep-newest."""

    pr_number: int | None
    branch: str

    @property
    def name(self) -> str:
        return f"pr-{self.pr_number}" if self.pr_number is not None else f"branch {self.branch}"


@dataclass(frozen=True)
class _Transient:
    tag: str
    digest: str
    stream: Stream
    created: datetime


def parse_created(value: str) -> datetime | None:
    text = value.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def is_protected(tag: str, rules: Rules) -> bool:
    """Tags kept whatever the policy says: latest, nightly, semver tags, the default branch's sha-* tags, and
    the ``protect`` globs."""
    policy = rules.policy
    bare = tag
    if policy.prefix and bare.startswith(policy.prefix):
        bare = bare[len(policy.prefix) :]
    if policy.suffix and bare.endswith(policy.suffix):
        bare = bare[: len(bare) - len(policy.suffix)]
    if tag in ALWAYS_PROTECTED or bare in ALWAYS_PROTECTED:
        return True
    if parse_semver(tag) is not None or parse_semver(bare) is not None or re.fullmatch(r"v?[0-9]+(\.[0-9]+)?", bare):
        return True
    if immutable_name(tag, policy) == "sha":
        return True
    return any(fnmatch.fnmatchcase(tag, pattern) for pattern in rules.protect)


def attachment_target(tag: str) -> str | None:
    """The digest a cosign or referrers fallback tag is named after; None for any other tag."""
    found = COSIGN_TAG.fullmatch(tag)
    return f"sha256:{found['hex']}" if found else None


def needs_labels(tag: str, policy: TagPolicy) -> bool:
    """Whether a tag has the shape of a pull request's or a branch's immutable tag: only such a tag is
    classified by its image's labels."""
    return immutable_name(tag, policy) not in (None, "sha")


def confirm(tag: str, labels: Mapping[str, str] | None, rules: Rules) -> tuple[Stream | None, str]:
    """The stream a PR- or branch-shaped tag belongs to when its image's labels confirm it, else why not.

    ``(None, "")`` means the tag does not have the shape of a transient tag at all."""
    if not needs_labels(tag, rules.policy):
        return None, ""
    sha, name = str(named_commit(tag, rules.policy)), str(immutable_name(tag, rules.policy))
    if labels is None:
        return None, "its image's labels could not be read"
    revision = labels.get(REVISION, "")
    if not revision:
        return None, f"its image has no {REVISION} label, so buildonce did not push it"
    if labels.get(rules.keys.pr_number):
        return _confirm_pr(name, sha, labels, rules)
    return _confirm_branch(tag, sha, labels, rules)


def _confirm_pr(name: str, sha: str, labels: Mapping[str, str], rules: Rules) -> tuple[Stream | None, str]:
    keys = rules.keys
    number = labels[keys.pr_number]
    pr = _PR_NAME.fullmatch(name)
    commits = [commit for commit in (labels.get(keys.pr_head_sha, ""), labels.get(REVISION, "")) if commit]
    if pr is None or pr["number"] != number:
        return None, f"its image's {keys.pr_number} label ({number}) does not name this tag"
    if not any(commit.startswith(sha) for commit in commits):
        return None, f"its image was built from another commit than {sha}"
    return Stream(int(number), ""), ""


def _confirm_branch(tag: str, sha: str, labels: Mapping[str, str], rules: Rules) -> tuple[Stream | None, str]:
    keys, policy = rules.keys, rules.policy
    branch = labels.get(keys.branch, "")
    why = ""
    if not branch:
        why = f"its image has neither a {keys.pr_number} nor a {keys.branch} label"
    elif branch == rules.default_branch:
        why = f"its image was built for the default branch {branch}"
    elif name_sha_tag(branch, sha, prefix=policy.prefix, suffix=policy.suffix) != tag:
        why = f"its image's {keys.branch} label ({branch}) does not name this tag"
    elif not labels.get(REVISION, "").startswith(sha):
        why = f"its image was built from another commit than {sha}"
    return (None, why) if why else (Stream(None, branch), "")


def _created(labels: Mapping[str, str] | None) -> datetime | None:
    return parse_created(labels.get(CREATED, "")) if labels else None


def _age(rules: Rules, created: datetime) -> timedelta:
    return max(rules.now - created, timedelta(0))


def describe_age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# --- the plan ------------------------------------------------------------------------------------------------


@dataclass
class _Classified:
    tag_rule: dict[str, tuple[bool, str]] = field(default_factory=dict)
    """tag -> (kept, rule), for every tag that is not an attachment."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    attachments: dict[str, str] = field(default_factory=dict)
    """cosign, fallback and build-key tags -> the digest they belong to."""
    transients: list[_Transient] = field(default_factory=list)


def _classify(snapshot: Snapshot, rules: Rules) -> _Classified:
    found = _Classified()
    for tag, digest in sorted(snapshot.tags.items()):
        target = attachment_target(tag) or (digest if BUILDKEY_TAG.fullmatch(tag) else None)
        if target is not None:
            found.attachments[tag] = target
            continue
        if is_protected(tag, rules):
            found.tag_rule[tag] = (True, "protected")
            continue
        labels = snapshot.labels.get(digest)
        stream, why_not = confirm(tag, labels, rules)
        created = _created(labels)
        if stream is not None and created is None:
            why_not = f"its image has no readable {CREATED} label to tell its age"
        if stream is None or created is None:
            found.tag_rule[tag] = (True, f"not confirmed: {why_not}" if why_not else "not a transient tag")
            if why_not:
                found.skipped.append((tag, why_not))
            continue
        found.transients.append(_Transient(tag, digest, stream, created))
    _decide_transients(found.transients, rules, found.tag_rule)
    return found


@dataclass
class _Sweep:
    snapshot: Snapshot
    marked: set[str]
    attachments: Mapping[str, str]
    tags_of: dict[str, list[str]]
    referrers: Mapping[str, set[str]] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)
    groups: list[tuple[Step, ...]] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)

    def untag(self, tag: str, digest: str, rule: str) -> None:
        self.groups.append((Step(digest, tag, rule),))
        previous = self.decisions.get(digest)
        untag = (*(previous.untag if previous else ()), tag)
        self.decisions[digest] = Decision(digest, tuple(sorted(self.tags_of[digest])), Action.UNTAG, rule, untag)

    def delete(self, digest: str, rule: str) -> None:
        group = _delete_group(
            digest,
            rule=rule,
            snapshot=self.snapshot,
            marked=self.marked,
            referrers=self.referrers,
            deleted=self.deleted,
        )
        self.groups.append(group)
        for step in group:
            tags = tuple(sorted(self.tags_of.get(step.digest, ())))
            self.decisions[step.digest] = Decision(step.digest, tags, Action.DELETE, step.why)


def plan_prune(snapshot: Snapshot, rules: Rules) -> Plan:
    """Decide every tag and digest of one repository; see the module's description."""
    found = _classify(snapshot, rules)
    roots = {snapshot.tags[tag] for tag, (kept, _) in found.tag_rule.items() if kept}
    marked = mark(roots, snapshot, found.attachments)
    tags_of: dict[str, list[str]] = {}
    for tag, digest in snapshot.tags.items():
        tags_of.setdefault(digest, []).append(tag)
    sweep = _Sweep(snapshot, marked, found.attachments, tags_of, _referrers_of(snapshot, found.attachments))
    removed = [tag for tag, (kept, _) in found.tag_rule.items() if not kept]
    for tag in sorted(removed, key=lambda item: (snapshot.tags[item], item)):
        digest = snapshot.tags[tag]
        if digest in marked:
            sweep.untag(tag, digest, found.tag_rule[tag][1])
        elif digest not in sweep.deleted:
            sweep.delete(digest, found.tag_rule[tag][1])
    # Cosign and fallback tags left by an earlier run whose image is gone belong to nothing.
    for tag, target in sorted(found.attachments.items()):
        digest = snapshot.tags[tag]
        if target not in snapshot.nodes and digest not in marked and digest not in sweep.deleted:
            sweep.delete(digest, f"{tag} names {target[:19]}, which is gone")
    for digest, tags in sorted(tags_of.items()):
        if digest not in sweep.decisions:
            why = sorted({found.tag_rule[tag][1] for tag in tags if tag in found.tag_rule})
            rule = "; ".join(why) if why else "only attachment tags name it (kept: nothing confirms its stream)"
            if not why and digest in marked:
                rule = "attached to a kept image"
            sweep.decisions[digest] = Decision(digest, tuple(sorted(tags)), Action.KEEP, rule)
    untagged = {step.tag for group in sweep.groups for step in group if step.tag}
    kept = sorted(tag for tag, digest in snapshot.tags.items() if digest not in sweep.deleted and tag not in untagged)
    return Plan(
        decisions=tuple(_with_size(sweep.decisions[digest], snapshot) for digest in sorted(sweep.decisions)),
        groups=tuple(sweep.groups),
        kept=tuple(kept),
        skipped=tuple(found.skipped),
        marked=frozenset(marked),
        reclaimable=reclaimable(snapshot, sweep.deleted),
    )


def _decide_transients(transients: list[_Transient], rules: Rules, tag_rule: dict[str, tuple[bool, str]]) -> None:
    by_stream: dict[Stream, list[_Transient]] = {}
    for item in transients:
        by_stream.setdefault(item.stream, []).append(item)
    for stream, items in by_stream.items():
        closed = (stream.pr_number is not None and stream.pr_number in rules.closed_prs) or (
            stream.pr_number is None and stream.branch in rules.deleted_branches
        )
        # Newest first by the image's own created label; the digest breaks ties, so every run orders alike.
        newest = sorted({(item.created, item.digest) for item in items}, reverse=True)
        keep_digests = {digest for _, digest in newest[: 0 if closed else rules.keep_newest]}
        max_age, age_input = (
            (rules.pr_max_age, "pr-max-age")
            if stream.pr_number is not None
            else (rules.branch_max_age, "branch-max-age")
        )
        for item in items:
            age = _age(rules, item.created)
            if age < rules.min_age:
                tag_rule[item.tag] = (True, f"younger than min-age ({describe_age(rules.min_age)})")
            elif closed:
                what = "closed pull request" if stream.pr_number is not None else "deleted branch"
                tag_rule[item.tag] = (False, f"{what} ({stream.name})")
            elif item.digest in keep_digests:
                tag_rule[item.tag] = (True, f"newest {rules.keep_newest} of {stream.name} (keep-newest)")
            elif age > max_age:
                tag_rule[item.tag] = (False, f"older than {age_input} ({describe_age(max_age)}) in {stream.name}")
            else:
                tag_rule[item.tag] = (True, f"within {age_input} ({describe_age(max_age)})")


def _referrers_of(snapshot: Snapshot, attachments: Mapping[str, str]) -> dict[str, set[str]]:
    """subject digest -> the digests attached to it: manifests naming it as subject, what the referrers API
    listed, and the digests of cosign and fallback tags named after it."""
    found: dict[str, set[str]] = {}
    for node in snapshot.nodes.values():
        if node.subject:
            found.setdefault(node.subject, set()).add(node.digest)
    for subject, digests in snapshot.referrers.items():
        found.setdefault(subject, set()).update(digests)
    for tag, target in attachments.items():
        digest = snapshot.tags[tag]
        if digest != target:
            found.setdefault(target, set()).add(digest)
    return found


def mark(roots: Iterable[str], snapshot: Snapshot, attachments: Mapping[str, str]) -> set[str]:
    """Every digest reachable from ``roots``: children, subjects and referrers, to a fixed point."""
    referrers = _referrers_of(snapshot, attachments)
    marked: set[str] = set()
    stack = list(roots)
    while stack:
        digest = stack.pop()
        if digest in marked:
            continue
        marked.add(digest)
        node = snapshot.nodes.get(digest)
        if node is not None:
            stack.extend(node.children)
            if node.subject:
                stack.append(node.subject)
        stack.extend(referrers.get(digest, ()))
    return marked


def _delete_group(
    top: str,
    *,
    rule: str,
    snapshot: Snapshot,
    marked: set[str],
    referrers: Mapping[str, set[str]],
    deleted: set[str],
) -> tuple[Step, ...]:
    """``top``, then every unmarked manifest below it, then every unmarked referrer of those: in that order."""
    steps = [Step(top, "", rule)]
    deleted.add(top)
    below: list[str] = []
    stack = list(reversed(_node(snapshot, top).children))
    while stack:
        digest = stack.pop()
        if digest in marked or digest in deleted:
            continue
        deleted.add(digest)
        below.append(digest)
        stack.extend(reversed(_node(snapshot, digest).children))
    steps += [Step(digest, "", f"child of {top[:19]}") for digest in below]
    queue = [top, *below]
    position = 0
    while position < len(queue):  # bounded: each digest enters the queue once
        subject = queue[position]
        position += 1
        for digest in sorted(referrers.get(subject, ())):
            if digest in marked or digest in deleted:
                continue
            deleted.add(digest)
            steps.append(Step(digest, "", f"refers to {subject[:19]}"))
            queue.append(digest)
            for child in _node(snapshot, digest).children:
                if child not in marked and child not in deleted:
                    deleted.add(child)
                    steps.append(Step(child, "", f"child of {digest[:19]}"))
                    queue.append(child)
    return tuple(steps)


def _node(snapshot: Snapshot, digest: str) -> Node:
    return snapshot.nodes.get(digest) or Node(digest)


def _with_size(decision: Decision, snapshot: Snapshot) -> Decision:
    if decision.action is not Action.DELETE:
        return decision
    node = _node(snapshot, decision.digest)
    size = node.size + sum(size for _, size in node.blobs)
    return Decision(decision.digest, decision.tags, decision.action, decision.rule, decision.untag, size)


def reclaimable(snapshot: Snapshot, deleted: set[str]) -> int:
    """Bytes that only deleted manifests use: their own bytes and blobs no kept manifest shares."""
    kept_blobs = {blob for digest, node in snapshot.nodes.items() if digest not in deleted for blob, _ in node.blobs}
    nodes = [_node(snapshot, digest) for digest in deleted]
    freed = {blob: size for node in nodes for blob, size in node.blobs if blob not in kept_blobs}
    return sum(node.size for node in nodes) + sum(freed.values())


def plan_json(repository: str, plan: Plan) -> list[dict[str, Any]]:
    return [{"repository": repository, **decision.as_json()} for decision in plan.decisions]
