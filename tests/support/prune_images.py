"""Images for the prune tests, built by ``buildonce build`` from scratch contexts with a chosen age (the
created label follows SOURCE_DATE_EPOCH), and ``buildonce prune`` run as the runner would."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from action_run import Run, run_on_fixture

__all__ = ["DAY", "HOUR", "Run", "build_pr", "build_push", "planned", "prune", "run_prune", "with_action"]
from build_contexts import scratch_context
from events import payload

FAST_RETRY = {"retry-wait-seconds": "0.1", "timeout-minutes": "2"}
HOUR = 3600
DAY = 24 * HOUR


def _epoch(age: float) -> str:
    return str(int(time.time() - age))


def build_pr(workdir: Path, image: str, number: int, head: str, age: float, platforms: str = "") -> Run:
    data = payload("pull-request")
    data["number"] = number
    data["pull_request"]["number"] = number
    data["pull_request"]["head"]["sha"] = head
    inputs = {
        "images": image,
        "artifact": "false",
        "build-args": f"SOURCE_DATE_EPOCH={_epoch(age)}",
        "platforms": platforms,
        **FAST_RETRY,
    }
    scratch_context(workdir, f"pr {number} {head}")
    return _checked(run_on_fixture("build", workdir, "pull-request", inputs, data=data))


def build_push(workdir: Path, image: str, branch: str, sha: str, age: float, platforms: str = "") -> Run:
    fixture = "push-default" if branch == "main" else "push-branch"
    data = payload(fixture)
    data["ref"] = f"refs/heads/{branch}"
    data["after"] = sha
    data["head_commit"]["id"] = sha
    inputs = {
        "images": image,
        "artifact": "false",
        "build-args": f"SOURCE_DATE_EPOCH={_epoch(age)}",
        "platforms": platforms,
        **FAST_RETRY,
    }
    scratch_context(workdir, f"{branch} {sha}")
    env = {"GITHUB_SHA": sha, "GITHUB_REF": f"refs/heads/{branch}"}
    return _checked(run_on_fixture("build", workdir, fixture, inputs, env=env, data=data))


def _checked(run: Run) -> Run:
    assert run.code == 0, run.log
    return run


def prune(workdir: Path, image: str, **inputs: str) -> Run:
    """``buildonce prune`` on a schedule event (whose payload names the default branch, main)."""
    return run_prune(workdir, image, inputs)


def run_prune(workdir: Path, image: str, inputs: dict[str, str], env: dict[str, str] | None = None) -> Run:
    workdir.mkdir(parents=True, exist_ok=True)
    given = {"images": image, **FAST_RETRY, **inputs}
    return run_on_fixture("prune", workdir, "schedule", given, env=env)


def planned(run: Run) -> dict[str, dict[str, Any]]:
    return {entry["digest"]: entry for entry in json.loads(run.outputs["plan"])}


def with_action(run: Run, action: str) -> set[str]:
    return {digest for digest, entry in planned(run).items() if entry["action"] == action}
