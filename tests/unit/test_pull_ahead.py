"""consume's pull started before the imports (``buildonce.docker.ahead``): when it starts, and that the
command takes it only when it would have started that very pull, else it is stopped.

A stand-in ``docker`` on PATH records its arguments (a line per call) and waits for a gate file, so a pull is
still running when it is taken or stopped.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from buildonce.docker.ahead import PullAhead, pull_ahead
from buildonce.docker.cli import CliPuller
from buildonce.references import ImageName

IMAGE = "127.0.0.1:5000/acme/app"
DIGEST = "sha256:" + "b" * 64


def stand_in(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    gate = tmp_path / "gate"
    docker.write_text(
        f'#!/bin/sh\necho "$*" >> "{tmp_path}/args.log"\n'
        f'i=0; while [ ! -e "{gate}" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n'
    )
    docker.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "INPUT_IMAGE": IMAGE, "INPUT_DIGEST": DIGEST}


def pulls(tmp_path: Path) -> list[list[str]]:
    """Each pull the stand-in was asked for, as its arguments, once it has logged them."""
    log = tmp_path / "args.log"
    deadline = time.monotonic() + 10
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return [line.split(" ") for line in log.read_text().splitlines()] if log.exists() else []


def started(tmp_path: Path, argv: list[str], **inputs: str) -> PullAhead | None:
    env = {**stand_in(tmp_path), **inputs}
    return pull_ahead(argv, env)


def test_the_plainest_consume_of_a_digest_starts_its_pull_at_once(tmp_path: Path) -> None:
    ahead = started(tmp_path, ["consume", "--input", "defer-artifact=true"])
    assert ahead is not None
    try:
        assert pulls(tmp_path) == [["pull", "--quiet", f"{IMAGE}@{DIGEST}"]]
        assert ahead.argv == [str(tmp_path / "bin" / "docker"), "pull", "--quiet", f"{IMAGE}@{DIGEST}"]
    finally:
        ahead.cancel()


@pytest.mark.parametrize(
    ("argv", "inputs"),
    [
        (["build"], {}),
        (["consume", "--input", "source=artifact"], {}),
        (["consume", "--json"], {}),
        (["consume", "--event", "e.json"], {}),
        (["consume"], {"INPUT_VERIFY_SIGNATURE": "keyless"}),
        (["consume"], {"INPUT_VERIFY-SIGNATURE": "key"}),
        (["consume"], {"INPUT_PLATFORM": "linux/arm64"}),
        (["consume"], {"INPUT_USERNAME": "bot"}),
        (["consume"], {"INPUT_PASSWORD": "hunter2"}),
        (["consume"], {"INPUT_SOURCE": "artifact"}),
        (["consume"], {"INPUT_SOURCE": "Artifact"}),
        (["consume"], {"INPUT_DIGEST": "sha256:" + "B" * 64}),
        (["consume"], {"INPUT_DIGEST": "sha512:" + "b" * 128}),
        (["consume"], {"INPUT_DIGEST": ""}),
        (["consume"], {"INPUT_IMAGE": "127.0.0.1:5000/Acme/app"}),
        (["consume"], {"INPUT_IMAGE": "127.0.0.1:5000/acme/app:latest"}),
        (["consume"], {"INPUT_IMAGE": "--help/x"}),
        (["consume"], {"INPUT_IMAGE": "app"}),
        (["consume"], {"INPUT_IMAGE": "127.0.0.1:5000/acme/app\nx"}),
        (["consume"], {"INPUT_IMAGE": "127.0.0.1:port/acme/app"}),
        (["consume"], {"INPUT_IMAGE": "127.0.0.1:5000/acme//app"}),
        (["consume"], {"INPUT_IMAGE": "127.0.0.1:5000/acme/-app"}),
    ],
)
def test_anything_but_the_plainest_case_starts_nothing(tmp_path: Path, argv: list[str], inputs: dict[str, str]) -> None:
    assert started(tmp_path, argv, **inputs) is None
    assert not (tmp_path / "args.log").exists()


def test_no_docker_on_path_starts_nothing(tmp_path: Path) -> None:
    assert pull_ahead(["consume"], {"PATH": str(tmp_path), "INPUT_IMAGE": IMAGE, "INPUT_DIGEST": DIGEST}) is None


def test_the_command_takes_the_pull_it_would_start_itself(tmp_path: Path) -> None:
    ahead = started(tmp_path, ["consume"])
    assert ahead is not None
    puller = CliPuller(dict(ahead.env))
    pending = puller.start(ImageName(IMAGE), DIGEST, 30, ahead=ahead)
    (tmp_path / "gate").write_text("")
    pending.wait()
    assert pulls(tmp_path) == [["pull", "--quiet", f"{IMAGE}@{DIGEST}"]]  # one pull: the one started ahead
    ahead.cancel()  # taken: nothing left to stop


def test_a_pull_ahead_of_another_command_is_stopped_and_the_commands_own_runs(tmp_path: Path) -> None:
    ahead = started(tmp_path, ["consume"])
    assert ahead is not None
    process = ahead._process
    assert process is not None
    puller = CliPuller(dict(ahead.env))
    pending = puller.start(ImageName(IMAGE), DIGEST, 30, platform="linux/arm64", ahead=ahead)
    assert process.poll() is not None  # the one started ahead was stopped
    (tmp_path / "gate").write_text("")
    pending.wait()
    assert pulls(tmp_path)[-1] == ["pull", "--quiet", "--platform", "linux/arm64", f"{IMAGE}@{DIGEST}"]


def test_a_pull_ahead_in_another_environment_is_not_taken(tmp_path: Path) -> None:
    ahead = started(tmp_path, ["consume"])
    assert ahead is not None
    with_login = {**ahead.env, "DOCKER_CONFIG": str(tmp_path / "overlay")}
    assert ahead.take(ahead.argv, with_login) is None
    assert ahead.take(ahead.argv, ahead.env) is None  # stopped, and taken once at most


def test_python_m_buildonce_stops_a_pull_the_command_never_took(tmp_path: Path) -> None:
    env = {**stand_in(tmp_path), "INPUT_SOURCE": "registry", "INPUT_RETRY_ATTEMPTS": "not a number"}
    started_at = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "buildonce", "consume"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert "retry-attempts" in result.stdout
    assert pulls(tmp_path) == [["pull", "--quiet", f"{IMAGE}@{DIGEST}"]]
    assert time.monotonic() - started_at < 8  # stopped, not waited for (the stand-in would wait 10 s)
