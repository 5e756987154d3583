"""What a real runner cannot show of action.yml and consume/action.yml.

tests/runner runs both actions, and every example workflow, under nektos/act: their expressions, conditions,
step outputs, the artifact upload and download, the bad-input and fallback paths. What is left here is the
one thing act cannot run on this machine: a runner without Docker or without buildx (which consume does not
need). act drives the engine
itself and runs its jobs on this host, which has both, so the actions' first step (action/check-engine.sh) is
run here as that step runs it, ``bash`` with a PATH that lacks them, and must fail first with one clear error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from runner_format import commands

ROOT = Path(__file__).resolve().parents[2]
BASH = shutil.which("bash") or "/bin/bash"
ACTIONS = {"build": ROOT / "action.yml", "consume": ROOT / "consume" / "action.yml"}


def runner_path(directory: Path, *, docker_without_buildx: bool) -> str:
    """A PATH with bash and, optionally, a docker CLI that has no buildx plugin; nothing else."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bash").symlink_to(BASH)
    if docker_without_buildx:
        docker = directory / "docker"
        docker.write_text(
            "#!/bin/sh\n"
            'if [ "$1" = buildx ]; then echo "docker: \'buildx\' is not a docker command." >&2; exit 1; fi\n'
            'echo "Docker version 0.0.0"\n'
        )
        docker.chmod(0o755)
        return f"{directory}:/usr/bin:/bin"
    return str(directory)


def first_step(kind: str) -> dict[str, str]:
    step: dict[str, str] = yaml.safe_load(ACTIONS[kind].read_text())["runs"]["steps"][0]
    return step


@pytest.mark.parametrize(
    ("kind", "case", "message"),
    [
        ("build", "no-docker", "the docker CLI is not on this runner's PATH"),
        ("build", "no-buildx", "docker buildx is not available"),
        ("consume", "no-docker", "the docker CLI is not on this runner's PATH"),
        ("consume", "no-buildx", ""),
    ],
)
def test_a_runner_without_docker_or_buildx_fails_first(kind: str, case: str, message: str, tmp_path: Path) -> None:
    """The build needs buildx; consume only pulls, so a runner without buildx passes its check."""
    step = first_step(kind)
    assert step["name"] == {"build": "Check Docker and buildx", "consume": "Check Docker"}[kind]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("INPUT_", "GITHUB_", "RUNNER_"))}
    env["PATH"] = runner_path(tmp_path / "bin", docker_without_buildx=case == "no-buildx")
    env["GITHUB_ACTION_PATH"] = str(ACTIONS[kind].parent)
    result = subprocess.run(
        [BASH, "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if not message:
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout == f"docker: {tmp_path / 'bin' / 'docker'}\n", result.stdout
        return
    assert result.returncode == 1, result.stdout + result.stderr
    (error,) = commands(result.stdout, "error")
    assert message in error
