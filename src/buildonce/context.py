"""The GitHub context: which event ran, on which commit and ref, in which repository.

Built from plain values (the ``GITHUB_*`` variables and the event payload) so that it is tested with
dicts; reading the files they point to happens at the edge, in ``load_context``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from buildonce.errors import ContextError, InputError

SUPPORTED_EVENTS = (
    "push",
    "pull_request",
    "pull_request_target",
    "workflow_dispatch",
    "schedule",
    "merge_group",
    "release",
    "workflow_run",
)
_ZERO_SHA = "0" * 40
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Repository:
    full_name: str
    html_url: str = ""
    description: str = ""
    license: str = ""
    default_branch: str = ""

    @property
    def name(self) -> str:
        return self.full_name.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class PullRequest:
    number: int
    head_sha: str
    head_ref: str
    base_ref: str
    head_repo: str
    """``owner/name`` of the head repository; empty when the fork was deleted."""


@dataclass(frozen=True)
class Upstream:
    """What a ``workflow_run`` event says about the run that triggered it."""

    event: str
    head_sha: str
    head_branch: str
    head_repo: str
    pull_request_number: int | None
    run_id: str
    conclusion: str


@dataclass(frozen=True)
class Context:
    event_name: str
    sha: str
    """``GITHUB_SHA``: the commit checked out and built (for pull requests, GitHub's merge commit)."""
    ref: str
    repository: Repository
    server_url: str = "https://github.com"
    run_id: str = ""
    actor: str = ""
    pull_request: PullRequest | None = None
    upstream: Upstream | None = None
    merge_group_head_ref: str = ""
    commit_time: datetime | None = None
    """When ``sha`` was committed, if the payload or the workspace tells; never the clock."""

    @property
    def run_url(self) -> str:
        if not self.run_id or not self.repository.full_name:
            return ""
        return f"{self.server_url}/{self.repository.full_name}/actions/runs/{self.run_id}"

    @property
    def default_branch(self) -> str:
        return self.repository.default_branch


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _sha(value: Any, where: str) -> str:
    sha = _str(value).strip().lower()
    if len(sha) != 40 or not set(sha) <= _HEX:
        raise ContextError(
            f"{where} is {value!r}, not a 40-character commit sha. "
            "Run buildonce inside a GitHub Actions job, or give a complete event with --event."
        )
    return sha


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ContextError(f"{where} is {value!r}, not a pull request number. Check the event payload.")
    return value


def _timestamp(value: Any) -> datetime | None:
    text = _str(value).strip()
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(timezone.utc)


def _repository(payload: Mapping[str, Any], env: Mapping[str, str]) -> Repository:
    repo = _dict(payload.get("repository"))
    license_info = _dict(repo.get("license"))
    spdx = _str(license_info.get("spdx_id"))
    full_name = _str(repo.get("full_name")) or env.get("GITHUB_REPOSITORY", "")
    server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    return Repository(
        full_name=full_name,
        html_url=_str(repo.get("html_url")) or (f"{server}/{full_name}" if full_name else ""),
        description=_str(repo.get("description")),
        license="" if spdx in ("", "NOASSERTION") else spdx,
        default_branch=_str(repo.get("default_branch")) or _str(repo.get("master_branch")),
    )


def _pull_request(payload: Mapping[str, Any]) -> PullRequest:
    pr = _dict(payload.get("pull_request"))
    if not pr:
        raise ContextError("the event payload has no pull_request object. Check the event file.")
    head, base = _dict(pr.get("head")), _dict(pr.get("base"))
    return PullRequest(
        number=_int(pr.get("number", payload.get("number")), "pull_request.number"),
        head_sha=_sha(head.get("sha"), "pull_request.head.sha"),
        head_ref=_str(head.get("ref")),
        base_ref=_str(base.get("ref")),
        head_repo=_str(_dict(head.get("repo")).get("full_name")),
    )


def _upstream(payload: Mapping[str, Any]) -> Upstream:
    run = _dict(payload.get("workflow_run"))
    if not run:
        raise ContextError("the workflow_run event payload has no workflow_run object. Check the event file.")
    head_sha = _sha(run.get("head_sha"), "workflow_run.head_sha")
    number: int | None = None
    for pr in run.get("pull_requests") or []:
        # A run lists every open PR whose head is that branch; the one whose head is this sha is ours.
        if _str(_dict(_dict(pr).get("head")).get("sha")) in ("", head_sha):
            number = _int(_dict(pr).get("number"), "workflow_run.pull_requests[].number")
            break
    return Upstream(
        event=_str(run.get("event")),
        head_sha=head_sha,
        head_branch=_str(run.get("head_branch")),
        head_repo=_str(_dict(run.get("head_repository")).get("full_name")),
        pull_request_number=number,
        run_id=str(run.get("id") or ""),
        conclusion=_str(run.get("conclusion")),
    )


@dataclass
class _EventFields:
    ref: str
    sha: Any
    timestamp: datetime | None
    pull_request: PullRequest | None = None
    upstream: Upstream | None = None
    merge_group_head_ref: str = ""


def _event_fields(name: str, payload: Mapping[str, Any], *, ref: str, sha: str) -> _EventFields:
    """What each event kind says about its ref, commit and commit time; GITHUB_* values come first."""
    fields = _EventFields(
        ref=ref or _str(payload.get("ref")),
        sha=sha,
        timestamp=_timestamp(_dict(payload.get("head_commit")).get("timestamp")),
    )
    if name == "push":
        if payload.get("deleted") is True or _str(payload.get("after")) == _ZERO_SHA:
            raise ContextError(f"this push deletes {fields.ref or 'a ref'}: there is no commit to build.")
        fields.ref = _str(payload.get("ref")) or fields.ref
        fields.sha = sha or payload.get("after")
    elif name in ("pull_request", "pull_request_target"):
        pr = fields.pull_request = _pull_request(payload)
        # Outside Actions (a local --event run) there is no merge commit; the head is what is checked out.
        fields.sha = sha or _dict(payload.get("pull_request")).get("merge_commit_sha") or pr.head_sha
    elif name == "workflow_run":
        upstream = fields.upstream = _upstream(payload)
        fields.sha = sha or upstream.head_sha
        run_commit = _dict(_dict(payload.get("workflow_run")).get("head_commit"))
        fields.timestamp = fields.timestamp or _timestamp(run_commit.get("timestamp"))
    elif name == "merge_group":
        group = _dict(payload.get("merge_group"))
        fields.merge_group_head_ref = _str(group.get("head_ref")) or fields.ref
        fields.sha = sha or group.get("head_sha")
        fields.ref = fields.ref or fields.merge_group_head_ref
        fields.timestamp = fields.timestamp or _timestamp(_dict(group.get("head_commit")).get("timestamp"))
    elif name == "release":
        tag = _str(_dict(payload.get("release")).get("tag_name"))
        fields.ref = f"refs/tags/{tag}" if tag else fields.ref
    return fields


def build_context(
    env: Mapping[str, str],
    payload: Mapping[str, Any],
    *,
    event_name: str | None = None,
    default_branch: str = "",
    commit_time: datetime | None = None,
) -> Context:
    """Make the context from the runner's variables and the parsed event payload.

    The image's time is the job's ``SOURCE_DATE_EPOCH`` when set, else the payload's commit timestamp, else
    ``commit_time`` (the edge reads it from the workspace).
    """
    name = (event_name or env.get("GITHUB_EVENT_NAME", "")).strip()
    if not name:
        raise ContextError(
            "GITHUB_EVENT_NAME is not set. Run inside a GitHub Actions job, or pass --event-name and --event."
        )
    if name not in SUPPORTED_EVENTS:
        raise ContextError(
            f"the event {name!r} is not supported. buildonce plans tags for: {', '.join(SUPPORTED_EVENTS)}. "
            "Trigger the workflow on one of these events."
        )
    repository = _repository(payload, env)
    if default_branch:
        repository = replace(repository, default_branch=default_branch)

    fields = _event_fields(name, payload, ref=env.get("GITHUB_REF", ""), sha=env.get("GITHUB_SHA", ""))
    ref = fields.ref
    if name in ("schedule", "workflow_dispatch") and not ref and repository.default_branch:
        ref = f"refs/heads/{repository.default_branch}"
    if not ref and name not in ("pull_request", "pull_request_target", "workflow_run"):
        raise ContextError(f"GITHUB_REF is not set for the {name} event. Set it, or give a payload with 'ref'.")

    return Context(
        event_name=name,
        sha=_sha(fields.sha, "GITHUB_SHA"),
        ref=ref,
        repository=repository,
        server_url=env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/") or "https://github.com",
        run_id=env.get("GITHUB_RUN_ID", ""),
        actor=env.get("GITHUB_ACTOR", "") or _str(_dict(payload.get("sender")).get("login")),
        pull_request=fields.pull_request,
        upstream=fields.upstream,
        merge_group_head_ref=fields.merge_group_head_ref,
        commit_time=_source_date_epoch(env) or fields.timestamp or commit_time,
    )


def _source_date_epoch(env: Mapping[str, str]) -> datetime | None:
    """The job's own SOURCE_DATE_EPOCH, which then dates the image (label and build) instead of the commit."""
    given = env.get("SOURCE_DATE_EPOCH", "").strip()
    if not given:
        return None
    if not given.isdigit():
        raise InputError(
            f"SOURCE_DATE_EPOCH is {given!r}; it must be a whole number of seconds since 1970-01-01 UTC, "
            "or unset (buildonce then uses the commit's time)."
        )
    return datetime.fromtimestamp(int(given), tz=timezone.utc)


def read_payload(path: Path) -> dict[str, Any]:
    """Read and parse an event payload file, with errors that name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"the event file {path} does not exist. Check --event or GITHUB_EVENT_PATH.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"the event file {path} cannot be read: {exc}") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"the event file {path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}). "
            "Give the webhook payload of the event, as GitHub writes it to GITHUB_EVENT_PATH."
        ) from None
    if not isinstance(payload, dict):
        raise InputError(f"the event file {path} holds JSON {type(payload).__name__}, not an object.")
    return payload


def git_commit_time(workspace: Path, sha: str) -> datetime | None:
    """The committer time of ``sha`` in a checked-out workspace, or ``None`` if git cannot tell."""
    if not sha or not (workspace / ".git").exists():
        return None
    import subprocess  # only here: most plans never ask git

    try:
        result = subprocess.run(
            ["git", "-C", str(workspace), "log", "-1", "--format=%ct", sha, "--"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = result.stdout.strip()
    if result.returncode != 0 or not text.isdigit():
        return None
    return datetime.fromtimestamp(int(text), tz=timezone.utc)


def load_context(
    env: Mapping[str, str],
    *,
    event_path: Path | None = None,
    event_name: str | None = None,
    default_branch: str = "",
    workspace: Path | None = None,
) -> Context:
    """The edge: read the event file and the workspace, then build the context from plain values."""
    path = event_path or (Path(env["GITHUB_EVENT_PATH"]) if env.get("GITHUB_EVENT_PATH") else None)
    if path is None:
        raise InputError(
            "no event payload: GITHUB_EVENT_PATH is not set. Run inside a GitHub Actions job, "
            "or give a payload file with --event FILE (and --event-name NAME)."
        )
    payload = read_payload(path)
    context = build_context(env, payload, event_name=event_name, default_branch=default_branch)
    if context.commit_time is None:
        root = workspace or Path(env.get("GITHUB_WORKSPACE") or ".")
        found = git_commit_time(root, context.sha)
        if found is not None:
            context = replace(context, commit_time=found)
    return context
