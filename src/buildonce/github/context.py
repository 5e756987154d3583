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
from buildonce.github.workflow import check_text, fold_text

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
_DIGITS = frozenset("0123456789")
# datetime's range ends with 9999-12-31; a SOURCE_DATE_EPOCH past it dates nothing.
MAX_EPOCH = 253402300799
_PAYLOAD_HINT = "check the event file (GitHub never writes one like it)."


@dataclass(frozen=True)
class Repository:
    full_name: str
    html_url: str = ""
    description: str = ""
    license: str = ""
    default_branch: str = ""
    private: bool | None = None
    """As the payload tells; None when it does not."""

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
    author: str = ""
    """The login that opened the pull request (``dependabot[bot]`` for Dependabot's)."""


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
    actors: tuple[str, ...] = ()
    """Who started the triggering run and who re-ran it, as far as the payload tells."""


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


# Every payload field is read through these: a field of the wrong type reads as absent, a string is checked
# for control characters (it may reach the log, a label or an output), and errors show a value briefly.


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        return ""
    return check_text(value, f"the event payload's {where}", error=ContextError, hint=_PAYLOAD_HINT)


def _env(env: Mapping[str, str], name: str, default: str = "") -> str:
    return check_text(env.get(name, default), name, error=ContextError, hint=f"check how {name} is set.")


def _shown(value: Any) -> str:
    """A payload value for an error message: short, escaped, and never a deep structure's repr."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:60]) + "..."
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int | float):
        return str(value) if abs(value) < 10**20 else "a huge number"
    return f"a JSON {'object' if isinstance(value, dict) else 'array'}"


def _sha(value: Any, where: str) -> str:
    sha = value.strip().lower() if isinstance(value, str) else ""
    if len(sha) != 40 or not set(sha) <= _HEX:
        raise ContextError(
            f"{where} is {_shown(value)}, not a 40-character commit sha. "
            "Run buildonce inside a GitHub Actions job, or give a complete event with --event."
        )
    return sha


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ContextError(f"{where} is {_shown(value)}, not a pull request number. Check the event payload.")
    return value


def _run_id(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    if isinstance(value, str) and value and set(value) <= _DIGITS:
        return value
    return ""


def _login(value: Any, where: str) -> str:
    return _str(_dict(value).get("login"), f"{where}.login")


def _timestamp(value: Any, where: str) -> datetime | None:
    text = _str(value, where).strip()
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            return None
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # not a time, or one that UTC cannot hold (year 1 at +05:00)
        return None


def _repository(payload: Mapping[str, Any], env: Mapping[str, str]) -> Repository:
    repo = _dict(payload.get("repository"))
    license_info = _dict(repo.get("license"))
    spdx = _str(license_info.get("spdx_id"), "repository.license.spdx_id")
    full_name = _str(repo.get("full_name"), "repository.full_name") or _env(env, "GITHUB_REPOSITORY")
    server = _env(env, "GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    description = repo.get("description")
    return Repository(
        full_name=full_name,
        html_url=_str(repo.get("html_url"), "repository.html_url") or (f"{server}/{full_name}" if full_name else ""),
        # Prose, not a name: folded onto one line rather than refused.
        description=fold_text(description) if isinstance(description, str) else "",
        license="" if spdx in ("", "NOASSERTION") else spdx,
        default_branch=_str(repo.get("default_branch"), "repository.default_branch")
        or _str(repo.get("master_branch"), "repository.master_branch"),
        private=repo["private"] if isinstance(repo.get("private"), bool) else None,
    )


def _pull_request(payload: Mapping[str, Any]) -> PullRequest:
    pr = _dict(payload.get("pull_request"))
    if not pr:
        raise ContextError("the event payload has no pull_request object. Check the event file.")
    head, base = _dict(pr.get("head")), _dict(pr.get("base"))
    return PullRequest(
        number=_int(pr.get("number", payload.get("number")), "pull_request.number"),
        head_sha=_sha(head.get("sha"), "pull_request.head.sha"),
        head_ref=_str(head.get("ref"), "pull_request.head.ref"),
        base_ref=_str(base.get("ref"), "pull_request.base.ref"),
        head_repo=_str(_dict(head.get("repo")).get("full_name"), "pull_request.head.repo.full_name"),
        author=_login(pr.get("user"), "pull_request.user"),
    )


def _upstream(payload: Mapping[str, Any]) -> Upstream:
    run = _dict(payload.get("workflow_run"))
    if not run:
        raise ContextError("the workflow_run event payload has no workflow_run object. Check the event file.")
    head_sha = _sha(run.get("head_sha"), "workflow_run.head_sha")
    number: int | None = None
    for pr in _list(run.get("pull_requests")):
        # A run lists every open PR whose head is that branch; the one whose head is this sha is ours.
        pr_head = _str(_dict(_dict(pr).get("head")).get("sha"), "workflow_run.pull_requests[].head.sha")
        if pr_head.lower() in ("", head_sha):
            number = _int(_dict(pr).get("number"), "workflow_run.pull_requests[].number")
            break
    actors = (
        _login(run.get("actor"), "workflow_run.actor"),
        _login(run.get("triggering_actor"), "workflow_run.triggering_actor"),
    )
    return Upstream(
        event=_str(run.get("event"), "workflow_run.event"),
        head_sha=head_sha,
        head_branch=_str(run.get("head_branch"), "workflow_run.head_branch"),
        head_repo=_str(_dict(run.get("head_repository")).get("full_name"), "workflow_run.head_repository.full_name"),
        pull_request_number=number,
        run_id=_run_id(run.get("id")),
        conclusion=_str(run.get("conclusion"), "workflow_run.conclusion"),
        actors=tuple(actor for actor in actors if actor),
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
        ref=ref or _str(payload.get("ref"), "ref"),
        sha=sha,
        timestamp=_timestamp(_dict(payload.get("head_commit")).get("timestamp"), "head_commit.timestamp"),
    )
    if name == "push":
        if payload.get("deleted") is True or _str(payload.get("after"), "after") == _ZERO_SHA:
            raise ContextError(f"this push deletes {fields.ref or 'a ref'}: there is no commit to build.")
        fields.ref = _str(payload.get("ref"), "ref") or fields.ref
        fields.sha = sha or payload.get("after")
    elif name in ("pull_request", "pull_request_target"):
        pr = fields.pull_request = _pull_request(payload)
        # Outside Actions (a local --event run) there is no merge commit; the head is what is checked out.
        fields.sha = sha or _dict(payload.get("pull_request")).get("merge_commit_sha") or pr.head_sha
    elif name == "workflow_run":
        upstream = fields.upstream = _upstream(payload)
        fields.sha = sha or upstream.head_sha
        run_commit = _dict(_dict(payload.get("workflow_run")).get("head_commit"))
        fields.timestamp = fields.timestamp or _timestamp(
            run_commit.get("timestamp"), "workflow_run.head_commit.timestamp"
        )
    elif name == "merge_group":
        group = _dict(payload.get("merge_group"))
        fields.merge_group_head_ref = _str(group.get("head_ref"), "merge_group.head_ref") or fields.ref
        fields.sha = sha or group.get("head_sha")
        fields.ref = fields.ref or fields.merge_group_head_ref
        fields.timestamp = fields.timestamp or _timestamp(
            _dict(group.get("head_commit")).get("timestamp"), "merge_group.head_commit.timestamp"
        )
    elif name == "release":
        tag = _str(_dict(payload.get("release")).get("tag_name"), "release.tag_name")
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

    fields = _event_fields(name, payload, ref=_env(env, "GITHUB_REF"), sha=_env(env, "GITHUB_SHA"))
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
        server_url=_env(env, "GITHUB_SERVER_URL", "https://github.com").rstrip("/") or "https://github.com",
        run_id=_env(env, "GITHUB_RUN_ID"),
        actor=_env(env, "GITHUB_ACTOR") or _login(payload.get("sender"), "sender"),
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
    epoch = parse_epoch(given)
    if epoch is None:
        raise InputError(
            f"SOURCE_DATE_EPOCH is {_shown(given)}; it must be a whole number of seconds since 1970-01-01 UTC "
            f"(at most {MAX_EPOCH}), or unset (buildonce then uses the commit's time)."
        )
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def parse_epoch(text: str) -> int | None:
    """Seconds since 1970 written in ASCII digits (``str.isdigit`` also passes ``²`` and ``٣``), in
    datetime's range; ``None`` for anything else."""
    if not text or len(text) > len(str(MAX_EPOCH)) or not set(text) <= _DIGITS:
        return None
    epoch = int(text)
    return epoch if epoch <= MAX_EPOCH else None


def read_payload(path: Path) -> dict[str, Any]:
    """Read and parse an event payload file, with errors that name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"the event file {path} does not exist. Check --event or GITHUB_EVENT_PATH.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"the event file {path} cannot be read: {exc}") from None
    hint = "Give the webhook payload of the event, as GitHub writes it to GITHUB_EVENT_PATH."
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"the event file {path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}). {hint}"
        ) from None
    except (ValueError, RecursionError) as exc:  # a number too long to convert, or nesting too deep
        reason = "nests too deeply" if isinstance(exc, RecursionError) else "holds a number too long to read"
        raise InputError(f"the event file {path} {reason}. {hint}") from None
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
    epoch = parse_epoch(result.stdout.strip())
    if result.returncode != 0 or epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


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
