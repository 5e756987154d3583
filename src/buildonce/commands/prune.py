"""``buildonce prune``: remove the transient images buildonce pushed, and never break one that is kept.

Per repository: read every tag and the manifests below them (fail closed: if any cannot be read, nothing in that
repository is touched), decide with ``buildonce.retention``, then, with ``apply``, make the changes in the
plan's order within the ``max-deletes`` budget, and check that every kept tag and everything it needs still
answers. Without ``apply`` it only plans and reports.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from buildonce.commands import Invocation
from buildonce.commands.connect import open_registry, retry_policy
from buildonce.docker.config import ConfigError, docker_config_dir, normalize_registry, stored_credentials
from buildonce.errors import FatalError, InputError, RegistryError, VerificationError
from buildonce.github.packages import DEFAULT_API, Package, PackagesAPI
from buildonce.labels import Keys, rfc3339
from buildonce.oci import OCI_INDEX, Manifest, json_object, select_manifest
from buildonce.prune_options import Backend, PruneOptions, prune_options
from buildonce.references import ImageName
from buildonce.retention import (
    Action,
    Node,
    Plan,
    Rules,
    Snapshot,
    needs_labels,
    plan_json,
    plan_prune,
)

if TYPE_CHECKING:
    from buildonce.commands.seams import PruneRegistryAPI
    from buildonce.retry import RetryPolicy

READERS = 8
"""Manifests read at once: a repository of thousands of tags is read in seconds, not minutes. At most the
registry client's connection pool (10 a host), or connections are opened and thrown away."""
T = TypeVar("T")


class ReadError(FatalError):
    """A manifest of the repository could not be read: nothing in it may be deleted."""

    title = "Prune"


# --- the event ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventTargets:
    closed_prs: frozenset[int] = frozenset()
    deleted_branches: frozenset[str] = frozenset()
    default_branch: str = ""


def event_targets(event_name: str, payload: Mapping[str, Any]) -> EventTargets:
    """The pull request a ``closed`` event closes, the branch a ``delete`` (or deleting push) removes, and the
    repository's default branch."""
    repository = payload.get("repository")
    default = repository.get("default_branch", "") if isinstance(repository, dict) else ""
    default = default if isinstance(default, str) else ""
    closed: set[int] = set()
    deleted: set[str] = set()
    pull = payload.get("pull_request")
    if event_name in ("pull_request", "pull_request_target") and payload.get("action") == "closed":
        number = pull.get("number") if isinstance(pull, dict) else None
        if isinstance(number, int) and not isinstance(number, bool) and number > 0:
            closed.add(number)
    ref = payload.get("ref")
    if event_name == "delete" and payload.get("ref_type") == "branch" and isinstance(ref, str) and ref:
        deleted.add(ref.removeprefix("refs/heads/"))
    if (
        event_name == "push"
        and payload.get("deleted") is True
        and isinstance(ref, str)
        and ref.startswith("refs/heads/")
    ):
        deleted.add(ref.removeprefix("refs/heads/"))
    return EventTargets(frozenset(closed), frozenset(deleted), default)


def _event(call: Invocation) -> EventTargets:
    path = call.event_path or (Path(call.env["GITHUB_EVENT_PATH"]) if call.env.get("GITHUB_EVENT_PATH") else None)
    name = call.event_name or call.env.get("GITHUB_EVENT_NAME", "")
    if path is None:
        return EventTargets()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return EventTargets()
    return event_targets(name, data if isinstance(data, dict) else {})


def make_rules(options: PruneOptions, targets: EventTargets, now: datetime) -> Rules:
    default_branch = options.default_branch or targets.default_branch
    if not default_branch:
        raise InputError(
            "input 'default-branch' is empty and the event names no default branch. Give it (e.g. main): "
            "prune never deletes the default branch's images, so it must know which branch that is."
        )
    return Rules(
        now=now,
        default_branch=default_branch,
        pr_max_age=options.pr_max_age,
        branch_max_age=options.branch_max_age,
        keep_newest=options.keep_newest,
        min_age=options.min_age,
        closed_prs=options.closed_prs | targets.closed_prs,
        deleted_branches=options.deleted_branches | targets.deleted_branches,
        protect=options.protect,
        policy=options.policy,
        keys=Keys(options.label_namespace),
    )


# --- reading a repository -------------------------------------------------------------------------------------


def _node(manifest: Manifest) -> Node:
    body = json_object(manifest.raw)
    children = tuple(
        entry["digest"]
        for entry in body.get("manifests") or []
        if isinstance(entry, dict) and isinstance(entry.get("digest"), str)
    )
    subject = body.get("subject")
    blobs = tuple(
        (entry["digest"], int(entry.get("size") or 0))
        for entry in [body.get("config"), *(body.get("layers") or [])]
        if isinstance(entry, dict) and isinstance(entry.get("digest"), str)
    )
    return Node(
        digest=manifest.digest,
        media_type=manifest.media_type,
        size=len(manifest.raw),
        children=children,
        subject=subject["digest"] if isinstance(subject, dict) and isinstance(subject.get("digest"), str) else "",
        blobs=blobs,
    )


def _labels_from_config(raw: bytes) -> dict[str, str]:
    settings = json_object(raw).get("config")
    found = settings.get("Labels") if isinstance(settings, dict) else None
    return {str(key): str(value) for key, value in found.items()} if isinstance(found, dict) else {}


@dataclass
class Reader:
    """Reads one repository into a ``Snapshot``; every read goes through the retry policy."""

    registry: PruneRegistryAPI
    policy: RetryPolicy
    image: ImageName
    rules: Rules
    manifests: dict[str, Manifest] = field(default_factory=dict)

    def _call(self, operation: Callable[[], T], what: str) -> T:
        result, _ = self.policy.call(operation, what)
        return result

    def _many(self, function: Callable[[str], T], items: Iterable[str]) -> list[T]:
        listed = list(items)
        if len(listed) <= 1:
            return [function(item) for item in listed]
        with ThreadPoolExecutor(max_workers=READERS) as pool:
            return list(pool.map(function, listed))

    def _manifest(self, reference: str) -> Manifest | None:
        return self._call(lambda: self.registry.get_manifest(self.image, reference), f"read {self.image}:{reference}")

    def read(self) -> Snapshot:
        image = self.image
        tags = self._call(lambda: self.registry.list_tags(image), f"list the tags of {image}")
        tag_digest: dict[str, str] = {}
        for tag, manifest in zip(tags, self._many(self._manifest, tags), strict=True):
            if manifest is None:
                continue  # deleted since the listing: nothing to decide
            tag_digest[tag] = manifest.digest
            self.manifests.setdefault(manifest.digest, manifest)
        nodes = {digest: _node(manifest) for digest, manifest in self.manifests.items()}
        self._read_below(nodes)
        referrers = self._referrers(nodes)
        if referrers:
            self._read_below(nodes, extra=[d for found in referrers.values() for d in found])
        labels = self._labels(tag_digest, nodes)
        return Snapshot(tags=tag_digest, nodes=nodes, labels=labels, referrers=referrers)

    def _read_below(self, nodes: dict[str, Node], extra: Iterable[str] = ()) -> None:
        """Read every manifest an index lists (and ``extra``), each once, until none is left unread."""
        wanted = [*extra, *(child for node in nodes.values() for child in node.children)]
        for _ in range(64):  # nesting deeper than this is not an image
            missing = sorted({digest for digest in wanted if digest not in nodes})
            if not missing:
                return
            for digest, manifest in zip(missing, self._many(self._manifest, missing), strict=True):
                if manifest is None:
                    parents = sorted(node.digest for node in nodes.values() if digest in node.children)
                    owner = f", which {parents[0]} lists," if parents else ""
                    raise ReadError(f"{self.image}@{digest}{owner} is missing")
                self.manifests[digest] = manifest
                nodes[digest] = _node(manifest)
            wanted = [child for digest in missing for child in nodes[digest].children]
        raise ReadError(f"{self.image}: manifests nest more than 64 levels deep")

    def _referrers(self, nodes: Mapping[str, Node]) -> dict[str, tuple[str, ...]]:
        """What the referrers API lists for each digest; nothing when the registry does not offer it (asked
        once)."""
        digests = sorted(nodes)
        if not digests:
            return {}

        def ask(digest: str) -> list[dict[str, Any]] | None:
            return self._call(
                lambda: self.registry.referrers(self.image, digest), f"list the referrers of {self.image}@{digest}"
            )

        first = ask(digests[0])
        if first is None:
            return {}
        found = {digests[0]: first, **dict(zip(digests[1:], self._many(ask, digests[1:]), strict=True))}
        return {digest: tuple(entry["digest"] for entry in entries) for digest, entries in found.items() if entries}

    def _labels(self, tags: Mapping[str, str], nodes: Mapping[str, Node]) -> dict[str, dict[str, str]]:
        """The labels of every image a pull-request- or branch-shaped tag names: the image's config, or for an
        index the config of its first image (the labels are the same on every platform)."""
        wanted = sorted({digest for tag, digest in tags.items() if needs_labels(tag, self.rules.policy)})
        configs: dict[str, str] = {}
        for digest in wanted:
            body = json_object(self.manifests[digest].raw)
            if "manifests" in body:
                entry = select_manifest(body, None)
                body = json_object(self.manifests[entry["digest"]].raw) if entry else {}
            config = body.get("config")
            if isinstance(config, dict) and isinstance(config.get("digest"), str):
                configs[digest] = config["digest"]
        unique = sorted(set(configs.values()))
        read = self._many(
            lambda blob: self._call(lambda: self.registry.get_blob(self.image, blob), f"read {self.image}@{blob}"),
            unique,
        )
        by_blob = {blob: _labels_from_config(raw) for blob, raw in zip(unique, read, strict=True)}
        return {digest: by_blob[blob] for digest, blob in configs.items()}


# --- the sweep ------------------------------------------------------------------------------------------------


@dataclass
class RepositoryResult:
    image: ImageName
    plan: Plan | None = None
    failure: str = ""
    deleted: list[str] = field(default_factory=list)
    untagged: list[str] = field(default_factory=list)
    remaining: int = 0
    verified: bool = False


def throwaway(tag: str, now: datetime) -> Manifest:
    """An empty index, unique to ``tag`` and this moment, to put at a tag and delete by digest: how a tag is
    removed from a registry that deletes only by digest while other tags keep the image."""
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [],
        "annotations": {"dev.buildonce.prune.untag": tag, "dev.buildonce.prune.at": now.isoformat()},
    }
    return Manifest.from_bytes(json.dumps(body, separators=(",", ":")).encode(), OCI_INDEX)


def sweep(
    registry: PruneRegistryAPI,
    policy: RetryPolicy,
    result: RepositoryResult,
    budget: int,
    *,
    now: Callable[[], datetime],
    delete: Callable[[str], bool],
) -> int:
    """Make the plan's changes, group by group, while the budget lasts; returns the budget left."""
    if result.plan is None:
        return budget
    image = result.image
    for position, group in enumerate(result.plan.groups):
        if len(group) > budget and (budget <= 0 or result.deleted or result.untagged):
            result.remaining = sum(len(rest) for rest in result.plan.groups[position:])
            return budget
        for step in group:
            if step.tag:
                _untag(registry, policy, image, step.tag, marker=throwaway(step.tag, now()), delete=delete)
                result.untagged.append(step.tag)
            else:
                # A 404 is done: a run cut short, or another clean-up, got there first.
                policy.call(lambda: delete(step.digest), f"delete {image}@{step.digest}")  # noqa: B023 - called at once
                result.deleted.append(step.digest)
            budget -= 1
    return budget


def _untag(
    registry: PruneRegistryAPI,
    policy: RetryPolicy,
    image: ImageName,
    tag: str,
    *,
    marker: Manifest,
    delete: Callable[[str], bool],
) -> None:
    policy.call(lambda: registry.put_manifest(image, tag, marker), f"untag {image}:{tag}")
    policy.call(lambda: delete(marker.digest), f"untag {image}:{tag}")


class VersionDeleter:
    """Deletes manifests of a ghcr.io image as GitHub package versions, found by digest."""

    def __init__(self, api: PackagesAPI, image: ImageName) -> None:
        self._api = api
        self._package = Package.of(image)
        self._ids: dict[str, int] | None = None

    def delete(self, digest: str) -> bool:
        if self._ids is None or digest not in self._ids:
            # A version made since the listing (an untag's marker) is found by listing again.
            self._ids = {version.digest: version.id for version in self._api.versions(self._package)}
        version = self._ids.get(digest)
        if version is None:
            return False  # gone already: done
        done = self._api.delete_version(self._package, version)
        self._ids.pop(digest, None)
        return done


def _exists(registry: PruneRegistryAPI, policy: RetryPolicy, image: ImageName, reference: str) -> str | None:
    found, _ = policy.call(lambda: registry.resolve(image, reference), f"check {image}:{reference}")
    return found


def verify(registry: PruneRegistryAPI, policy: RetryPolicy, result: RepositoryResult, snapshot: Snapshot) -> None:
    """Every kept tag still resolves to its digest, and every manifest it needs (children, referrers) answers."""
    if result.plan is None:
        return
    image = result.image
    problems: list[str] = []
    # A kept tag moved by someone else since the listing still resolves: only a tag that is gone is a failure.
    problems += [
        f"{image}:{tag} no longer resolves" for tag in result.plan.kept if _exists(registry, policy, image, tag) is None
    ]
    needed = sorted(result.plan.marked & set(snapshot.nodes))
    for digest in needed:
        if _exists(registry, policy, image, digest) is None:
            problems.append(f"{image}@{digest}, which a kept tag needs, is missing")
    if problems:
        raise VerificationError(
            "after the sweep, "
            + "; ".join(problems[:10])
            + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else "")
            + ". A kept image is broken: check what else deletes from this registry (another clean-up job, a "
            "retention policy) and push the image again."
        )
    result.verified = True


# --- the command ----------------------------------------------------------------------------------------------

GHCR = "ghcr.io"


def uses_packages_api(backend: Backend, image: ImageName) -> bool:
    if backend is Backend.AUTO:
        return normalize_registry(image.registry) == GHCR
    return backend is Backend.GHCR


def packages_api(options: PruneOptions, env: Mapping[str, str], timeout: float) -> PackagesAPI:
    """The Packages API with the login's password as its token (GITHUB_TOKEN, or a token with delete:packages),
    else the Docker config's for ghcr.io."""
    token = options.login.password if options.login else ""
    if not token:
        try:
            stored = stored_credentials(docker_config_dir(env), GHCR)
        except ConfigError:
            stored = None
        token = stored.password if stored else ""
    if not token:
        raise InputError(
            "input 'password' is empty, and deleting from ghcr.io goes through the GitHub Packages API, which needs "
            "a token: give password: ${{ secrets.GITHUB_TOKEN }} (with the Admin role on the package) or a token "
            "with delete:packages."
        )
    pace = env.get("BUILDONCE_API_PACE_SECONDS", "")
    return PackagesAPI(
        token,
        api_url=env.get("GITHUB_API_URL") or DEFAULT_API,
        timeout=timeout,
        pace_seconds=float(pace) if pace.replace(".", "", 1).isdigit() else 1.0,
    )


def run(call: Invocation) -> None:
    """Plan (and with apply, make) the clean-up of every image named."""
    options = prune_options(call.inputs)
    rules = make_rules(options, _event(call), datetime.now(timezone.utc))
    console = call.console
    policy = retry_policy(options.retry, console)
    registry = open_registry(options.login, call.env, policy)
    budget = options.max_deletes
    results: list[RepositoryResult] = []
    api: PackagesAPI | None = None
    try:
        for image in options.images:
            result = RepositoryResult(image)
            results.append(result)
            snapshot = None
            try:
                snapshot = Reader(registry, policy, image, rules).read()
            except FatalError as failure:
                # Reported once, with every other repository's failure, when the run ends.
                result.failure = f"nothing in {image} was deleted: a manifest could not be read ({failure})"
                continue
            result.plan = plan_prune(snapshot, rules)
            console.info(describe_plan(image, snapshot, result.plan))
            if not options.apply:
                result.remaining = result.plan.changes
                continue
            delete: Callable[[str], bool] = partial(registry.delete_manifest, image)
            if uses_packages_api(options.backend, image):
                api = api or packages_api(options, call.env, policy.timeout_seconds)
                delete = VersionDeleter(api, image).delete
            budget = sweep(registry, policy, result, budget, now=lambda: datetime.now(timezone.utc), delete=delete)
            verify(registry, policy, result, snapshot)
    finally:
        registry.close()
        if api is not None:
            api.close()
    outputs = prune_outputs(results, applied=options.apply)
    call.finish(outputs, summary(results, applied=options.apply))
    for result in results:
        if result.remaining and options.apply:
            console.notice(
                f"{result.image}: max-deletes ({options.max_deletes}) reached; {result.remaining} changes are "
                "left for the next run.",
                title="Prune",
            )
    planned = sum(result.plan.changes for result in results if result.plan)
    if not options.apply and planned:
        console.notice(f"Dry run (apply is false): {planned} changes planned, none made.", title="Prune")
    failed = [result for result in results if result.failure]
    if failed:
        raise RegistryError("; ".join(result.failure for result in failed))


def describe_plan(image: ImageName, snapshot: Snapshot, plan: Plan) -> str:
    counts = {action: sum(1 for d in plan.decisions if d.action is action) for action in Action}
    return (
        f"{image}: {len(snapshot.tags)} tags, {len(snapshot.nodes)} manifests read; plan: delete "
        f"{counts[Action.DELETE]}, untag {counts[Action.UNTAG]}, keep {counts[Action.KEEP]} digests "
        f"({len(plan.skipped)} tags kept unconfirmed)"
    )


def prune_outputs(results: list[RepositoryResult], *, applied: bool) -> dict[str, str]:
    plan: list[dict[str, Any]] = []
    deleted: list[str] = []
    untagged: list[str] = []
    kept: list[str] = []
    skipped: list[str] = []
    remaining = 0
    for result in results:
        repository = str(result.image)
        if result.plan is None:
            skipped.append(f"{repository}: {result.failure}")
            continue
        plan += plan_json(repository, result.plan)
        deleted += [f"{repository}@{digest}" for digest in result.deleted]
        untagged += [f"{repository}:{tag}" for tag in result.untagged]
        kept += [f"{repository}:{tag}" for tag in result.plan.kept]
        skipped += [f"{repository}:{tag}: {reason}" for tag, reason in result.plan.skipped]
        remaining += result.remaining
    return {
        "plan": json.dumps(plan, separators=(",", ":")),
        "applied": "true" if applied else "false",
        "deleted": "\n".join(deleted),
        "untagged": "\n".join(untagged),
        "kept": "\n".join(kept),
        "skipped": "\n".join(skipped),
        "remaining": str(remaining),
        "reclaimable-bytes": str(sum(result.plan.reclaimable for result in results if result.plan)),
    }


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def summary(results: list[RepositoryResult], *, applied: bool) -> str:
    verb = "Removed" if applied else "Would remove (dry run: apply is false)"
    lines = [
        f"### buildonce prune: {verb}",
        "",
        "| Image | Digest | Tags | Action | Rule | Size |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        if result.plan is None:
            lines.append(f"| `{result.image}` | | | skipped | {result.failure} | |")
            continue
        done = set(result.deleted)
        for decision in result.plan.decisions:
            if decision.action is Action.KEEP:
                continue
            state = decision.action.value
            if applied and decision.action is Action.DELETE and decision.digest not in done:
                state += " (left for the next run)"
            tags = ", ".join(f"`{tag}`" for tag in (decision.untag or decision.tags)) or "(untagged)"
            size = _size(decision.size) if decision.size else ""
            lines.append(
                f"| `{result.image}` | `{decision.digest[:19]}` | {tags} | {state} | {decision.rule} | {size} |"
            )
    total = sum(result.plan.reclaimable for result in results if result.plan)
    kept = sum(len(result.plan.kept) for result in results if result.plan)
    lines += [
        "",
        f"Kept {kept} tags. Bytes only the removed images use: {_size(total)} (freed by the registry's "
        "garbage collection).",
    ]
    when = rfc3339(datetime.now(timezone.utc))
    lines.append(f"Planned at {when}.")
    return "\n".join(lines) + "\n"
