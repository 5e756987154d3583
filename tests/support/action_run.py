"""Run ``buildonce`` as the runner would: a separate process, GITHUB_* and INPUT_* variables, runner files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events import payload as fixture_payload
from events import runner_env
from runner_format import commands, parse_outputs


@dataclass
class Run:
    code: int
    log: str
    outputs: dict[str, str]
    summary: str

    def errors(self) -> list[str]:
        return commands(self.log, "error")

    def warnings(self) -> list[str]:
        return commands(self.log, "warning")

    def notices(self) -> list[str]:
        return commands(self.log, "notice")


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any runner or input variables, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("INPUT_", "GITHUB_", "RUNNER_"))}
    env.update(extra)
    return env


@dataclass(frozen=True)
class RunnerSetup:
    """The files a runner gives a step (event payload, outputs, summary) and the step's environment."""

    output: Path
    summary: Path
    env: dict[str, str]

    def outputs(self) -> dict[str, str]:
        return parse_outputs(self.output.read_text())


def runner_setup(
    workdir: Path,
    *,
    event_name: str,
    payload: dict[str, Any],
    env: Mapping[str, str],
    inputs: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
) -> RunnerSetup:
    """Write the payload and empty runner files under ``workdir/.runner`` and make the environment a runner
    gives ``buildonce``: GITHUB_* and RUNNER_TEMP, then ``extra``, then ``env``, then the INPUT_* variables."""
    workdir.mkdir(parents=True, exist_ok=True)
    runner = workdir / ".runner"
    runner.mkdir(exist_ok=True)
    event = runner / "event.json"
    event.write_text(json.dumps(payload))
    output, summary = runner / "output", runner / "summary"
    output.write_text("")
    summary.write_text("")
    process_env = clean_environment(
        GITHUB_EVENT_NAME=event_name,
        GITHUB_EVENT_PATH=str(event),
        GITHUB_OUTPUT=str(output),
        GITHUB_STEP_SUMMARY=str(summary),
        GITHUB_REPOSITORY="acme/widget",
        GITHUB_SERVER_URL="https://github.com",
        GITHUB_RUN_ID="777",
        GITHUB_ACTOR="octocat",
        RUNNER_TEMP=str(runner),
        **(extra or {}),
    )
    process_env.update(env)
    process_env.update({f"INPUT_{name.upper()}": value for name, value in inputs.items()})
    return RunnerSetup(output, summary, process_env)


def run_buildonce(
    command: str,
    workdir: Path,
    *,
    event_name: str,
    payload: dict[str, Any],
    env: dict[str, str],
    inputs: dict[str, str],
    args: list[str] | None = None,
    timeout: float = 600,
) -> Run:
    """Write the payload and runner files into ``workdir`` and run ``python -m buildonce COMMAND`` there."""
    setup = runner_setup(workdir, event_name=event_name, payload=payload, env=env, inputs=inputs)
    result = subprocess.run(
        [sys.executable, "-m", "buildonce", command, *(args or [])],
        cwd=workdir,
        env=setup.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    log = result.stdout + result.stderr
    return Run(result.returncode, log, setup.outputs(), setup.summary.read_text())


def run_on_fixture(
    command: str,
    workdir: Path,
    fixture: str,
    inputs: dict[str, str],
    *,
    env: dict[str, str] | None = None,
    data: dict[str, Any] | None = None,
) -> Run:
    """``run_buildonce`` on a fixture's event (or ``data`` in its place), with the GITHUB_SHA and GITHUB_REF
    the runner sets for it; ``env`` adds to them or overrides them."""
    runner = runner_env(fixture)
    return run_buildonce(
        command,
        workdir,
        event_name=runner["GITHUB_EVENT_NAME"],
        payload=data or fixture_payload(fixture),
        env={"GITHUB_SHA": runner["GITHUB_SHA"], "GITHUB_REF": runner["GITHUB_REF"], **(env or {})},
        inputs=inputs,
    )
