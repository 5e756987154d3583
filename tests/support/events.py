"""Event payload fixtures and the runner environment that goes with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "events"

EVENT_NAMES = {
    "push-branch": "push",
    "push-default": "push",
    "push-tag-semver": "push",
    "push-tag-other": "push",
    "push-delete": "push",
    "pull-request": "pull_request",
    "pull-request-fork": "pull_request",
    "pull-request-target": "pull_request_target",
    "workflow-dispatch": "workflow_dispatch",
    "schedule": "schedule",
    "merge-group": "merge_group",
    "release": "release",
    "workflow-run-pr": "workflow_run",
    "workflow-run-fork-pr": "workflow_run",
    "workflow-run-push": "workflow_run",
    "workflow-run-default": "workflow_run",
}


def payload(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def runner_env(name: str, **extra: str) -> dict[str, str]:
    """The GITHUB_* variables the runner sets for a fixture (GITHUB_SHA as GitHub would set it)."""
    data = payload(name)
    event = EVENT_NAMES[name]
    sha = "2222222222222222222222222222222222222222"
    ref = data.get("ref", "")
    if event in ("pull_request", "pull_request_target"):
        number = data["pull_request"]["number"]
        sha = data["pull_request"].get("merge_commit_sha") or data["pull_request"]["base"]["sha"]
        if event == "pull_request_target":
            sha, ref = data["pull_request"]["base"]["sha"], "refs/heads/main"
        else:
            ref = f"refs/pull/{number}/merge"
    elif event == "push":
        sha = data["after"]
    elif event == "merge_group":
        sha, ref = data["merge_group"]["head_sha"], data["merge_group"]["head_ref"]
    elif event == "release":
        ref = f"refs/tags/{data['release']['tag_name']}"
    elif event in ("schedule", "workflow_run"):
        ref = "refs/heads/main"
    env = {
        "GITHUB_EVENT_NAME": event,
        "GITHUB_EVENT_PATH": str(FIXTURES / f"{name}.json"),
        "GITHUB_SHA": sha,
        "GITHUB_REF": ref,
        "GITHUB_REPOSITORY": "acme/widget",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_RUN_ID": "4242",
        "GITHUB_ACTOR": "octocat",
    }
    env.update(extra)
    return env
