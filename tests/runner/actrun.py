"""Run a workflow under nektos/act on this host, and read what a user would read of the run.

act runs each job on the host itself (``-P ubuntu-latest=-self-hosted``: no runner image), against the
real Docker engine, with its own artifact and cache servers on 127.0.0.1. Its ``--json`` log is parsed into
jobs (their results, logs and step summaries); a report job the test appends to the workflow writes
``toJSON(needs)``, so the results and the outputs later jobs read through ``needs.*.outputs`` are checked
as the workflow itself sees them.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry_server import free_port
from rewrites import REPORT_ENV

_STEP_DONE = re.compile(r"(?:Success|Failure|Skipped) - (?P<name>.+?)(?: \[[^\]]*\])?$")

RUN_TIMEOUT = 420
"""Longest one act run may take; a run that takes longer has hung."""


@dataclass
class JobRun:
    """One job, or one leg of a matrix job, as act logged it."""

    job: str
    matrix: dict[str, Any]
    result: str = ""
    lines: list[str] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)
    steps: dict[str, str] = field(default_factory=dict)
    """'stage step-name' -> the step's result, for every step that ran."""

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def errors(self) -> list[str]:
        return [line.split("::error", 1)[1] for line in self.lines if "::error" in line]

    def unheard_failures(self) -> list[str]:
        """The failed steps act logged no line of: its host runner returns from a step that exits non-zero
        without draining the step's terminal (pkg/container/host_environment.go, ``exec``), so what a step
        printed just before it failed can be lost. GitHub's runner reads the output to its end."""
        lines = [line.strip() for line in self.lines]
        unheard = []
        for started, ended in itertools.pairwise(lines):
            done = _STEP_DONE.search(ended)
            if done and "Failure - " in ended and started == f"⭐ Run {done['name']}":
                unheard.append(done["name"])
        return unheard


@dataclass
class ActRun:
    code: int
    jobs: list[JobRun]
    needs: dict[str, Any]
    """The report job's ``toJSON(needs)``: each job's result and outputs."""
    artifacts: Path
    """Where act's artifact server keeps this run's artifacts (one folder per artifact)."""
    raw: str

    def legs(self, job: str) -> list[JobRun]:
        return [run for run in self.jobs if run.job == job]

    def only(self, job: str) -> JobRun:
        legs = self.legs(job)
        assert len(legs) == 1, f"one run of job {job!r} expected, got {len(legs)}:\n{self.raw[-4000:]}"
        return legs[0]

    def result(self, job: str) -> str:
        """The job's result as later jobs see it (needs.<job>.result)."""
        return str(self.needs[job]["result"])

    def outputs(self, job: str) -> dict[str, str]:
        return dict(self.needs[job]["outputs"])

    def artifact_names(self) -> list[str]:
        return sorted(path.name for path in self.artifacts.iterdir()) if self.artifacts.is_dir() else []

    def replace_leg(self, leg: JobRun) -> None:
        """Put ``leg`` (the same job, run again alone) in place of this run's leg of it."""
        self.jobs = [leg if run.job == leg.job and run.matrix == leg.matrix else run for run in self.jobs]

    def describe(self) -> str:
        """What went wrong, for assertion messages: each job's result and its error annotations."""
        parts = [f"act exited {self.code}"]
        parts += [f"{run.job} {run.matrix or ''}: {run.result or 'no result'} {run.errors()}" for run in self.jobs]
        parts.append(self.raw[-6000:])
        return "\n".join(parts)


def parse_log(raw: str) -> list[JobRun]:
    runs: dict[tuple[str, str], JobRun] = {}
    for line in raw.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or "jobID" not in entry:
            continue
        matrix = entry.get("matrix") or {}
        key = (entry["jobID"], json.dumps(matrix, sort_keys=True))
        run = runs.setdefault(key, JobRun(entry["jobID"], matrix))
        run.lines.append(str(entry.get("msg", "")).rstrip())
        if entry.get("command") == "summary":
            run.summaries.append(str(entry.get("content", "")))
        if "stepResult" in entry and "stepID" in entry:
            # The message names the step itself, also inside a composite action ("entry['step']" names
            # the action there): "  ✅  Success - Main Download the image artifact [2.03s]".
            named = _STEP_DONE.search(str(entry.get("msg", "")))
            if named:
                run.steps[named["name"]] = entry["stepResult"]
        if "jobResult" in entry:
            run.result = entry["jobResult"]
    return list(runs.values())


@dataclass
class Act:
    """act with this suite's fixed flags; each run gets its own action cache and ports."""

    binary: str
    scratch: Path
    artifact_dir: Path
    cache_dir: Path
    local_repositories: dict[str, Path]
    secrets: dict[str, str]
    actor: str

    def run(
        self,
        repo: Path,
        workflow: str,
        event_name: str,
        event: dict[str, Any],
        *,
        run_id: int,
        jobs: str | None = None,
    ) -> ActRun:
        work = self.scratch / f"run-{run_id}"
        work.mkdir(parents=True)
        event_file = work / "event.json"
        event_file.write_text(json.dumps(event))
        secret_file = work / "secrets"
        secret_file.write_text("".join(f"{name}={value}\n" for name, value in self.secrets.items()))
        report = work / "needs.json"
        # act's artifact server panics listing the artifacts of a run whose folder does not exist yet.
        (self.artifact_dir / str(run_id)).mkdir(parents=True, exist_ok=True)
        argv = [
            self.binary,
            event_name,
            "--eventpath",
            str(event_file),
            "--workflows",
            f".github/workflows/{workflow}",
            "--platform",
            "ubuntu-latest=-self-hosted",
            # The native runners of native-legs.yml's matrix: this machine stands in for both.
            "--platform",
            "ubuntu-24.04=-self-hosted",
            "--platform",
            "ubuntu-24.04-arm=-self-hosted",
            "--json",
            "--actor",
            self.actor,
            "--secret-file",
            str(secret_file),
            "--env-file",
            str(work / "no-env"),
            "--var-file",
            str(work / "no-vars"),
            "--input-file",
            str(work / "no-inputs"),
            "--env",
            f"GITHUB_RUN_ID={run_id}",
            "--env",
            f"{REPORT_ENV}={report}",
            "--action-cache-path",
            str(work / "actions"),
            "--action-offline-mode",
            "--artifact-server-path",
            str(self.artifact_dir),
            "--artifact-server-addr",
            "127.0.0.1",
            "--artifact-server-port",
            str(free_port()),
            "--cache-server-addr",
            "127.0.0.1",
            "--cache-server-port",
            str(free_port()),
            "--cache-server-path",
            str(self.cache_dir),
        ]
        for reference, folder in sorted(self.local_repositories.items()):
            argv += ["--local-repository", f"{reference}={folder}"]
        if jobs:
            argv += ["--job", jobs]
        # The jobs run on this host: they get its environment, less what a runner would set itself.
        env = {key: value for key, value in os.environ.items() if not key.startswith(("GITHUB_", "INPUT_", "ACT"))}
        result = subprocess.run(
            argv, cwd=repo, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
        )
        raw = result.stdout + result.stderr
        (work / "act.log").write_text(raw)
        needs: dict[str, Any] = json.loads(report.read_text()) if report.is_file() else {}
        return ActRun(result.returncode, parse_log(raw), needs, self.artifact_dir / str(run_id), raw)


def git_repo(root: Path, files: dict[str, str], trees: dict[str, Path]) -> str:
    """A repository at ``root`` holding ``files`` and a copy of each tree (at its path), committed; returns
    the commit's sha."""
    for at, tree in trees.items():
        shutil.copytree(tree, root / at, dirs_exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git = ["git", "-C", str(root), "-c", "user.name=Widget Dev", "-c", "user.email=dev@widget.test"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "remote", "add", "origin", "https://github.com/acme/widget.git"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "widget"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
