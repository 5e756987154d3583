from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
from events import payload, runner_env

from buildonce.errors import ContextError, InputError
from buildonce.github.context import build_context, git_commit_time, load_context, read_payload
from buildonce.tags import Kind, PrSha, subject_of


def context_for(name: str, **env: str):  # type: ignore[no-untyped-def]
    return build_context(runner_env(name, **env), payload(name))


def test_push_branch() -> None:
    ctx = context_for("push-branch")
    subj = subject_of(ctx)
    assert subj.kind is Kind.BRANCH
    assert subj.ref_name == "feature/Add_New-Feature"
    assert subj.sha == "abc1234def5678abc1234def5678abc1234def56"
    assert ctx.commit_time == datetime(2026, 3, 4, 9, 20, 30, tzinfo=timezone.utc)
    assert ctx.default_branch == "main"


def test_push_default_branch() -> None:
    assert subject_of(context_for("push-default")).kind is Kind.DEFAULT_BRANCH


def test_default_branch_input_overrides_payload() -> None:
    env = runner_env("push-branch")
    ctx = build_context(env, payload("push-branch"), default_branch="feature/Add_New-Feature")
    assert subject_of(ctx).kind is Kind.DEFAULT_BRANCH


def test_push_tag() -> None:
    subj = subject_of(context_for("push-tag-semver"))
    assert (subj.kind, subj.ref_name) == (Kind.TAG, "v1.2.3")


def test_pull_request_uses_head_sha_by_default_and_merge_sha_on_request() -> None:
    ctx = context_for("pull-request")
    head = "abc1234" + "a" * 33
    assert ctx.sha == "5" * 40
    subj = subject_of(ctx)
    assert (subj.kind, subj.pr_number, subj.sha, subj.revision) == (Kind.PULL_REQUEST, 123, head, "5" * 40)
    assert subj.ref_name == "feature/fix-#123"
    assert subject_of(ctx, pr_sha=PrSha.MERGE).sha == "5" * 40


def test_pull_request_target() -> None:
    ctx = context_for("pull-request-target")
    subj = subject_of(ctx)
    assert subj.pr_number == 8
    assert subj.sha == "8" * 40
    assert ctx.pull_request is not None
    assert ctx.pull_request.head_repo == "stranger/widget"


def test_workflow_dispatch_is_a_push_to_its_ref() -> None:
    subj = subject_of(context_for("workflow-dispatch", GITHUB_REF="refs/heads/release/2026-q1"))
    assert (subj.kind, subj.ref_name) == (Kind.BRANCH, "release/2026-q1")


def test_schedule() -> None:
    subj = subject_of(context_for("schedule"))
    assert subj.kind is Kind.SCHEDULE


def test_merge_group() -> None:
    ctx = context_for("merge-group")
    subj = subject_of(ctx)
    assert subj.kind is Kind.MERGE_GROUP
    assert subj.ref_name.startswith("gh-readonly-queue/main/pr-123-")
    assert subj.sha == "6" * 40


def test_release_behaves_like_its_tag() -> None:
    subj = subject_of(context_for("release"))
    assert (subj.kind, subj.ref_name) == (Kind.TAG, "v2.0.0-rc.1")


def test_workflow_run_pull_request_picks_the_pr_whose_head_is_the_run_sha() -> None:
    ctx = context_for("workflow-run-pr")
    subj = subject_of(ctx)
    assert subj.kind is Kind.PULL_REQUEST
    assert subj.pr_number == 123
    assert subj.sha == "abc1234" + "a" * 33


def test_workflow_run_fork_pr_needs_the_number() -> None:
    ctx = context_for("workflow-run-fork-pr")
    with pytest.raises(ContextError, match="pr-number"):
        subject_of(ctx)
    assert subject_of(ctx, pr_number=7).pr_number == 7


def test_workflow_run_push() -> None:
    subj = subject_of(context_for("workflow-run-push"))
    assert (subj.kind, subj.ref_name, subj.ambiguous_ref) == (Kind.BRANCH, "feature/dns/subdomain", True)
    assert subject_of(context_for("workflow-run-default")).kind is Kind.DEFAULT_BRANCH


def test_unsupported_event() -> None:
    with pytest.raises(ContextError, match="'issues' is not supported"):
        build_context(runner_env("push-branch", GITHUB_EVENT_NAME="issues"), payload("push-branch"))


def test_deleted_branch_push_has_nothing_to_build() -> None:
    with pytest.raises(ContextError, match="deletes"):
        context_for("push-delete")


def test_missing_sha_is_an_error() -> None:
    env = runner_env("schedule")
    del env["GITHUB_SHA"]
    with pytest.raises(ContextError, match="GITHUB_SHA"):
        build_context(env, payload("schedule"))


def test_pull_request_without_pull_request_object() -> None:
    with pytest.raises(ContextError, match="pull_request"):
        build_context(runner_env("pull-request"), {"repository": {"full_name": "a/b"}})


def test_fields_of_the_wrong_type_are_ignored_not_crashing() -> None:
    data = payload("push-branch")
    data["repository"] = {"full_name": "acme/widget", "license": "MIT", "description": None}
    data["head_commit"] = {"timestamp": 12}
    ctx = build_context(runner_env("push-branch"), data)
    assert ctx.repository.license == ""
    assert ctx.commit_time is None


def test_run_url() -> None:
    assert context_for("push-branch").run_url == "https://github.com/acme/widget/actions/runs/4242"


def test_read_payload_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_payload(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_payload(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(InputError, match="not an object"):
        read_payload(bad)


def test_commit_time_from_the_workspace(tmp_path: Path) -> None:
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run(
        [*git, "commit", "-q", "--allow-empty", "-m", "x"],
        check=True,
        env={
            "GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z",
            "GIT_AUTHOR_DATE": "2026-01-02T03:04:05Z",
            "PATH": "/usr/bin:/bin",
        },
    )
    sha = subprocess.run([*git[:3], "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_commit_time(tmp_path, sha) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert git_commit_time(tmp_path, "f" * 40) is None

    event = tmp_path / "event.json"
    event.write_text(json.dumps({"schedule": "x", "repository": {"full_name": "a/b", "default_branch": "main"}}))
    env = {"GITHUB_EVENT_NAME": "schedule", "GITHUB_SHA": sha, "GITHUB_REF": "refs/heads/main"}
    ctx = load_context(env, event_path=event, workspace=tmp_path)
    assert ctx.commit_time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_the_jobs_source_date_epoch_dates_the_image() -> None:
    assert context_for("push-branch", SOURCE_DATE_EPOCH="1700000000").commit_time == datetime(
        2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc
    )
    assert context_for("push-branch", SOURCE_DATE_EPOCH=" ").commit_time == datetime(
        2026, 3, 4, 9, 20, 30, tzinfo=timezone.utc
    )
    with pytest.raises(InputError, match=r"SOURCE_DATE_EPOCH is 'yesterday'.*whole number of seconds"):
        context_for("push-branch", SOURCE_DATE_EPOCH="yesterday")
