from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import pytest
from events import payload, runner_env

from buildonce.errors import InputError
from buildonce.github.context import build_context
from buildonce.github.workflow import Inputs
from buildonce.options import plan_options
from buildonce.plan import DEPENDABOT, Plan, describe, make_plan

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


def plan_for(fixture: str, env: Mapping[str, str] | None = None, /, **inputs: str) -> Plan:
    values = {"images": "ghcr.io/acme/widget", **inputs}
    ctx = build_context(runner_env(fixture, **(env or {})), payload(fixture))
    return make_plan(ctx, plan_options(Inputs({}, values)), now=NOW)


def test_pull_request_plan() -> None:
    plan = plan_for("pull-request", images="ghcr.io/acme/widget\n127.0.0.1:5000/widget")
    assert [str(ref) for ref in plan.references] == [
        "ghcr.io/acme/widget:pr-123-abc1234",
        "127.0.0.1:5000/widget:pr-123-abc1234",
    ]
    assert plan.immutable_tag == "pr-123-abc1234"
    assert (plan.push.value, plan.load.value, plan.artifact.value) == (True, True, True)
    assert plan.labels["org.opencontainers.image.revision"] == "5" * 40
    assert plan.labels["dev.buildonce.pr.number"] == "123"
    assert plan.labels["dev.buildonce.pr.head-sha"] == "abc1234" + "a" * 33
    assert plan.labels["dev.buildonce.branch"] == "feature/fix-#123"
    assert plan.labels["dev.buildonce.run-url"] == "https://github.com/acme/widget/actions/runs/4242"
    assert plan.labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert plan.artifact_name == "widget-pr-123-abc1234"
    assert list(plan.labels) == sorted(plan.labels)


def test_created_is_the_commit_time_not_the_clock() -> None:
    plan = plan_for("push-branch")
    assert plan.labels["org.opencontainers.image.created"] == "2026-03-04T09:20:30Z"
    assert not plan.created_from_clock
    clock = plan_for("pull-request")
    assert clock.labels["org.opencontainers.image.created"] == "2030-01-01T00:00:00Z"
    assert clock.created_from_clock


def test_plan_warns_of_what_it_had_to_guess() -> None:
    assert plan_for("push-branch").warnings() == []
    (clock,) = plan_for("pull-request").warnings()
    assert "commit time is unknown" in clock

    data = payload("push-default")
    del data["repository"]["default_branch"]
    ctx = build_context(runner_env("push-default"), data)
    unknown = make_plan(ctx, plan_options(Inputs({}, {"images": "ghcr.io/acme/widget"})), now=NOW)
    assert unknown.tag_names == ("main-0123456",)
    (warning,) = unknown.warnings()
    assert "default branch is unknown" in warning
    assert "'main'" in warning
    assert "default-branch" in warning

    ctx = build_context(runner_env("push-default"), data, default_branch="main")
    named = make_plan(ctx, plan_options(Inputs({}, {"images": "ghcr.io/acme/widget"})), now=NOW)
    assert named.tag_names == ("latest", "sha-0123456")
    assert named.warnings() == []


def test_default_branch_plan_does_not_load() -> None:
    plan = plan_for("push-default")
    assert plan.tag_names == ("latest", "sha-0123456")
    assert (plan.push.value, plan.load.value, plan.artifact.value) == (True, False, False)


def test_semver_tag_plan() -> None:
    plan = plan_for("push-tag-semver")
    assert plan.tag_names == ("1.2.3", "1.2", "1", "sha-fedcba9")
    assert plan.version == "1.2.3"
    assert plan.labels["org.opencontainers.image.version"] == "1.2.3"
    assert "dev.buildonce.branch" not in plan.labels  # a git tag is no branch


def test_fork_pull_request_is_not_pushed_but_kept_as_artifact() -> None:
    plan = plan_for("pull-request-fork")
    assert plan.push.value is False
    assert "fork" in plan.push.reason
    assert plan.artifact.value is True


def plan_of(fixture: str, data: dict[str, Any], env: Mapping[str, str] | None = None, /, **inputs: str) -> Plan:
    ctx = build_context(runner_env(fixture, **(env or {})), data)
    return make_plan(ctx, plan_options(Inputs({}, {"images": "ghcr.io/acme/widget", **inputs})), now=NOW)


def edited(fixture: str, *path: str, value: object) -> dict[str, Any]:
    """The fixture's payload with one field (by its path of keys) set to ``value``, or removed if None."""
    data = payload(fixture)
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return data


STRANGER = {"full_name": "stranger/widget"}
BOT = {"login": DEPENDABOT}


@pytest.mark.parametrize(
    ("fixture", "data", "env", "pushed"),
    [
        # pull_request and pull_request_target: the head repository decides; unknown counts as a fork.
        ("pull-request", None, {}, True),
        ("pull-request", edited("pull-request", "pull_request", "head", "repo", value=STRANGER), {}, False),
        ("pull-request", edited("pull-request", "pull_request", "head", "repo", value=None), {}, False),
        (
            "pull-request",
            edited("pull-request", "pull_request", "head", "repo", value={"full_name": "Acme/Widget"}),
            {},
            True,
        ),
        ("pull-request-fork", None, {}, False),
        ("pull-request-target", None, {}, False),
        (
            "pull-request-target",
            edited("pull-request-target", "pull_request", "head", "repo", value={"full_name": "acme/widget"}),
            {},
            True,
        ),
        # Dependabot: its own runs, a re-run of its pull request by someone else, pull_request_target alike.
        ("pull-request", None, {"GITHUB_ACTOR": DEPENDABOT}, False),
        ("pull-request", edited("pull-request", "pull_request", "user", value=BOT), {}, False),
        (
            "pull-request-target",
            edited("pull-request-target", "pull_request", "head", "repo", value={"full_name": "acme/widget"}),
            {"GITHUB_ACTOR": DEPENDABOT},
            False,
        ),
        ("push-branch", None, {"GITHUB_ACTOR": DEPENDABOT}, False),
        ("push-branch", None, {}, True),
        # workflow_run: the triggering run's head repository and actors decide.
        ("workflow-run-pr", None, {}, True),
        ("workflow-run-push", None, {}, True),
        ("workflow-run-pr", edited("workflow-run-pr", "workflow_run", "head_repository", value=STRANGER), {}, False),
        ("workflow-run-push", edited("workflow-run-push", "workflow_run", "head_repository", value=None), {}, False),
        ("workflow-run-pr", edited("workflow-run-pr", "workflow_run", "actor", value=BOT), {}, False),
        ("workflow-run-pr", edited("workflow-run-pr", "workflow_run", "triggering_actor", value=BOT), {}, False),
        # merge_group: a commit GitHub made in this repository from queued, reviewed pull requests.
        ("merge-group", None, {}, True),
        ("merge-group", None, {"GITHUB_ACTOR": DEPENDABOT}, False),
        ("schedule", None, {}, True),
        ("release", None, {}, True),
        ("workflow-dispatch", None, {}, True),
        ("push-tag-semver", None, {}, True),
        ("push-default", None, {}, True),
    ],
)
def test_push_auto_never_pushes_fork_or_dependabot_code(
    fixture: str, data: dict[str, Any] | None, env: dict[str, str], pushed: bool
) -> None:
    plan = plan_of(fixture, data if data is not None else payload(fixture), env)
    assert plan.push.value is pushed, plan.push.reason
    if not pushed:
        assert plan.artifact.value is True  # the image still reaches the test jobs
        assert "fork" in plan.push.reason or "Dependabot" in plan.push.reason
    # The input has the last word, either way.
    assert plan_of(fixture, data if data is not None else payload(fixture), env, push="true").push.value is True
    assert plan_of(fixture, data if data is not None else payload(fixture), env, push="false").push.value is False


def test_unknown_repository_counts_as_a_fork() -> None:
    data = edited("pull-request", "repository", "full_name", value=None)
    env = {key: value for key, value in runner_env("pull-request").items() if key != "GITHUB_REPOSITORY"}
    plan = make_plan(build_context(env, data), plan_options(Inputs({}, {"images": "a/b"})), now=NOW)
    assert plan.push.value is False


def test_explicit_switches() -> None:
    plan = plan_for("pull-request", push="false", load="false", artifact="false")
    assert (plan.push.value, plan.load.value, plan.artifact.value) == (False, False, False)
    # An artifact needs the image in the engine.
    plan = plan_for("push-default", load="false", artifact="true")
    assert (plan.load.value, plan.artifact.value) == (True, True)


def test_extra_tags_bare_and_full() -> None:
    plan = plan_for(
        "push-default", images="ghcr.io/acme/widget,docker.io/acme/widget", tags="stable\nquay.io/acme/w:edge"
    )
    assert [str(ref) for ref in plan.references] == [
        "ghcr.io/acme/widget:latest",
        "ghcr.io/acme/widget:sha-0123456",
        "ghcr.io/acme/widget:stable",
        "docker.io/acme/widget:latest",
        "docker.io/acme/widget:sha-0123456",
        "docker.io/acme/widget:stable",
        "quay.io/acme/w:edge",
    ]
    assert [str(ref) for ref in plan.immutable_references] == [
        "ghcr.io/acme/widget:sha-0123456",
        "docker.io/acme/widget:sha-0123456",
    ]


def test_user_labels_win_and_annotations_follow() -> None:
    plan = plan_for("push-branch", labels="org.opencontainers.image.title=Widget\ncom.acme.team=core")
    assert plan.labels["org.opencontainers.image.title"] == "Widget"
    assert plan.labels["com.acme.team"] == "core"
    assert "manifest:org.opencontainers.image.title=Widget" in plan.annotations
    assert not any("com.acme.team" in line for line in plan.annotations)
    assert all(line.startswith("manifest:org.opencontainers.image.") for line in plan.annotations)


def test_metadata_action_json_is_merged() -> None:
    meta = {
        "tags": ["ghcr.io/acme/widget:edge", "ghcr.io/acme/widget:pr-123-abc1234"],
        "labels": {"org.opencontainers.image.version": "edge", "org.opencontainers.image.vendor": "Acme"},
        "annotations": ["manifest:org.opencontainers.image.vendor=Acme", "index:com.acme.x=1"],
    }
    plan = plan_for(
        "pull-request",
        **{"metadata-json": json.dumps(meta), "labels": "org.opencontainers.image.vendor=Acme Inc"},
    )
    refs = [str(ref) for ref in plan.references]
    assert refs == ["ghcr.io/acme/widget:pr-123-abc1234", "ghcr.io/acme/widget:edge"]
    assert plan.labels["org.opencontainers.image.version"] == "edge"
    assert plan.version == "edge"
    assert plan.labels["org.opencontainers.image.vendor"] == "Acme Inc"
    assert "manifest:org.opencontainers.image.vendor=Acme Inc" in plan.annotations
    assert "index:com.acme.x=1" in plan.annotations
    out = json.loads(plan.outputs()["json"])
    assert out["tags"] == refs
    assert out["labels"] == plan.labels


def test_images_may_come_from_metadata_json_alone() -> None:
    meta = json.dumps({"tags": ["ghcr.io/acme/other:edge"], "labels": {}})
    plan = plan_for("push-branch", images="", **{"metadata-json": meta})
    assert [str(ref) for ref in plan.references] == [
        "ghcr.io/acme/other:feature-add-new-feature-abc1234",
        "ghcr.io/acme/other:edge",
    ]


def test_no_images_at_all_is_an_error() -> None:
    with pytest.raises(InputError, match="'images' is empty"):
        plan_for("push-branch", images="")


def test_outputs_have_every_planned_key() -> None:
    outputs = plan_for("pull-request").outputs()
    assert set(outputs) == {
        "tags",
        "tag-names",
        "labels",
        "annotations",
        "version",
        "immutable-tag",
        "json",
        "push",
        "load",
        "artifact",
        "artifact-name",
    }
    assert outputs["immutable-tag"] == "pr-123-abc1234"
    assert outputs["push"] == "true"


def test_description_with_newlines_is_folded_into_one_label_line() -> None:
    data = payload("push-branch")
    data["repository"]["description"] = "line one\nline=two\r\nthree"
    ctx = build_context(runner_env("push-branch"), data)
    plan = make_plan(ctx, plan_options(Inputs({}, {"images": "a/b"})), now=NOW)
    assert plan.labels["org.opencontainers.image.description"] == "line one line=two three"


# --- tags of an immutable tag's shape, whatever input they come from ---------------------------------------

THIS = "fedcba9"  # the commit of push-tag-other
OTHER = "0123abc"


def git_tag_plan(name: str, /, **inputs: str) -> Plan:
    data = payload("push-tag-other") | {"ref": f"refs/tags/{name}"}
    return plan_of("push-tag-other", data, {"GITHUB_REF": f"refs/tags/{name}"}, **inputs)


@pytest.mark.parametrize(
    ("name", "inputs"),
    [
        (f"sha-{OTHER}", {}),
        (f"pr-42-{OTHER}", {}),
        (f"feature/login-{OTHER}", {}),
        (f"SHA-{OTHER.upper()}", {}),  # sanitized to lower case: sha-0123abc
        (f"sha-{OTHER}aaaaa", {"sha-length": "12"}),
        (f"web-sha-{OTHER}", {"tag-prefix": "web-"}),  # web-web-sha-…: the branch web-sha of that prefix
        (f"sha-{OTHER}", {"tag-suffix": "-slim"}),  # sha-0123abc-slim: that commit's tag here
        (f"sha_{OTHER}", {}),  # sanitized to sha-0123abc
        (f"sha-{OTHER}", {"tag-prefix": "web-"}),  # web-sha-0123abc: exactly that commit's tag here
    ],
)
def test_a_git_tag_naming_another_commit_is_refused(name: str, inputs: dict[str, str]) -> None:
    with pytest.raises(InputError) as caught:
        git_tag_plan(name, **inputs)
    message = str(caught.value)
    assert "the git tag" in message
    assert name in message
    assert "immutable tag" in message
    assert "Rename the git tag" in message


@pytest.mark.parametrize(
    ("inputs", "source"),
    [
        ({"tags": f"sha-{OTHER}"}, "input 'tags'"),
        ({"tags": f"stable\npr-7-{OTHER}"}, "input 'tags'"),
        ({"tags": f"docker.io/acme/other:main-{OTHER}"}, "input 'tags'"),
        ({"metadata-json": json.dumps({"tags": [f"ghcr.io/acme/widget:sha-{OTHER}"]})}, "input 'metadata-json'"),
        ({"tags": f"web-sha-{OTHER}-slim", "tag-prefix": "web-", "tag-suffix": "-slim"}, "input 'tags'"),
    ],
)
def test_a_given_tag_naming_another_commit_is_refused(inputs: dict[str, str], source: str) -> None:
    for fixture in ("push-default", "pull-request", "push-tag-other", "schedule"):
        with pytest.raises(InputError, match=re.escape(source)) as caught:
            plan_for(fixture, **inputs)
        assert OTHER in str(caught.value)


def test_tags_of_that_shape_naming_this_commit_are_checked_as_immutable() -> None:
    plan = git_tag_plan(f"sha-{THIS}")
    assert plan.tag_names == (f"sha-{THIS}",)
    assert [ref.tag for ref in plan.immutable_references] == [f"sha-{THIS}"]

    plan = git_tag_plan(f"release-{THIS}", tags=f"stable\nghcr.io/acme/widget:main-{THIS}")
    assert [str(ref) for ref in plan.immutable_references] == [
        f"ghcr.io/acme/widget:sha-{THIS}",  # the planned immutable tag comes first
        f"ghcr.io/acme/widget:release-{THIS}",
        f"ghcr.io/acme/widget:main-{THIS}",
    ]
    assert "stable" not in {ref.tag for ref in plan.immutable_references}
    assert f"also checked as immutable: release-{THIS}" in describe(plan)


def test_a_pull_requests_merge_commit_counts_as_this_commit() -> None:
    # metadata-action's type=sha names GITHUB_SHA, the merge commit GitHub builds.
    meta = json.dumps({"tags": ["ghcr.io/acme/widget:sha-5555555", "ghcr.io/acme/widget:pr-123"]})
    plan = plan_for("pull-request", **{"metadata-json": meta})
    assert [str(ref) for ref in plan.immutable_references] == [
        "ghcr.io/acme/widget:pr-123-abc1234",
        "ghcr.io/acme/widget:sha-5555555",
    ]


@pytest.mark.parametrize(
    ("name", "inputs"),
    [
        (f"v1.0.0-{OTHER}", {}),  # a version: dots, which no immutable tag has
        (f"sha-{OTHER}", {"sha-length": "8"}),  # seven digits: not this policy's length
        ("nightly-2026", {}),
        (f"sha-{OTHER}", {"tags": f"sha-{OTHER}", "tag-prefix": "web-", "sha-length": "8"}),
    ],
)
def test_tags_of_another_shape_are_left_alone(name: str, inputs: dict[str, str]) -> None:
    plan = git_tag_plan(name, **inputs)
    assert [ref.tag for ref in plan.immutable_references] == [plan.immutable_tag]


def test_given_tags_without_this_policys_prefix_cannot_collide() -> None:
    # Every immutable tag of this policy starts with web-; a bare sha-… is another policy's business.
    plan = plan_for("push-default", tags=f"sha-{OTHER}", **{"tag-prefix": "web-"})
    assert f"sha-{OTHER}" in plan.tag_names
    assert [ref.tag for ref in plan.immutable_references] == ["web-sha-0123456"]
