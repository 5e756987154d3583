from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone

import pytest
from events import payload, runner_env

from buildonce.context import build_context
from buildonce.errors import InputError
from buildonce.options import plan_options
from buildonce.plan import DEPENDABOT, Plan, make_plan
from buildonce.workflow import Inputs

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


def test_fork_on_pull_request_target_can_push() -> None:
    assert plan_for("pull-request-target").push.value is True


def test_dependabot_is_not_pushed_by_default() -> None:
    plan = plan_for("pull-request", {"GITHUB_ACTOR": DEPENDABOT})
    assert plan.push.value is False
    assert plan_for("pull-request", {"GITHUB_ACTOR": DEPENDABOT}, push="true").push.value is True


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
