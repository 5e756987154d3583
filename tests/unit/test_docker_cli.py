"""consume's pulls through the docker CLI: what it runs, and how each way it can fail is sorted.

A stand-in ``docker`` on PATH records its arguments and answers as the real CLI does; the real CLI against
the real engine is what tests/e2e/test_consume.py runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from buildonce.docker.cli import CliPuller
from buildonce.errors import EngineError, RegistryError
from buildonce.references import ImageName, Reference

IMAGE = ImageName("127.0.0.1:5000/acme/app")
DIGEST = "sha256:" + "a" * 64


def stand_in(tmp_path: Path, body: str) -> dict[str, str]:
    """A PATH whose docker runs ``body`` (sh) after logging its arguments, one per line, to args.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{tmp_path}/args.log"\n{body}\n')
    docker.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def logged(tmp_path: Path) -> list[str]:
    return (tmp_path / "args.log").read_text().splitlines()


def test_a_pull_names_the_image_by_digest_and_nothing_else(tmp_path: Path) -> None:
    puller = CliPuller(stand_in(tmp_path, 'echo "$3"'))
    puller.pull(IMAGE, DIGEST, 30)
    assert logged(tmp_path) == ["pull", "--quiet", f"{IMAGE}@{DIGEST}"]


def test_a_pull_of_another_platform_names_it(tmp_path: Path) -> None:
    puller = CliPuller(stand_in(tmp_path, "true"))
    puller.pull(IMAGE, DIGEST, 30, platform="linux/arm64")
    assert logged(tmp_path) == ["pull", "--quiet", "--platform", "linux/arm64", f"{IMAGE}@{DIGEST}"]


@pytest.mark.parametrize(
    ("said", "transient", "hint"),
    [
        ("Error response from daemon: received unexpected HTTP status: 503 Service Unavailable", True, ""),
        ("Error response from daemon: toomanyrequests: slow down", True, ""),
        ("Error response from daemon: Head ...: dial tcp 127.0.0.1:5000: connect: connection refused", True, ""),
        ("Error response from daemon: unauthorized: authentication required", False, "credentials"),
        ("Error response from daemon: manifest for x not found: manifest unknown", False, ""),
    ],
)
def test_a_failed_pull_is_transient_only_for_registry_faults(
    tmp_path: Path, said: str, transient: bool, hint: str
) -> None:
    puller = CliPuller(stand_in(tmp_path, f"echo '{said}' >&2; exit 1"))
    with pytest.raises(RegistryError) as raised:
        puller.pull(IMAGE, DIGEST, 30)
    assert raised.value.transient is transient
    assert f"pulling {IMAGE}@{DIGEST}" in str(raised.value)
    assert hint in str(raised.value)
    assert "Error response from daemon" not in str(raised.value)


def test_an_engine_that_does_not_answer_is_an_engine_error(tmp_path: Path) -> None:
    said = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"
    puller = CliPuller(stand_in(tmp_path, f"echo '{said}' >&2; exit 1"))
    with pytest.raises(EngineError, match="cannot reach the Docker engine"):
        puller.pull(IMAGE, DIGEST, 30)


def test_a_pull_past_its_deadline_is_stopped_and_transient(tmp_path: Path) -> None:
    puller = CliPuller(stand_in(tmp_path, f'echo $$ > "{tmp_path}/pid"; exec sleep 30'))
    started = time.monotonic()
    with pytest.raises(RegistryError, match="no answer within") as raised:
        puller.pull(IMAGE, DIGEST, 1)
    assert raised.value.transient
    assert time.monotonic() - started < 15
    pid = int((tmp_path / "pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_a_tag_racing_another_job_is_asked_again(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    body = (
        f'n=$(cat "{counter}" 2>/dev/null || echo 0); echo $((n+1)) > "{counter}"; '
        'if [ "$n" -lt 2 ]; then echo "Error response from daemon: image already exists" >&2; exit 1; fi'
    )
    puller = CliPuller(stand_in(tmp_path, body))
    puller.tag(f"{IMAGE}@{DIGEST}", Reference(IMAGE, "pr-7-0123456"))
    assert counter.read_text().strip() == "3"
    assert logged(tmp_path)[-3:] == ["tag", f"{IMAGE}@{DIGEST}", f"{IMAGE}:pr-7-0123456"]


def test_a_tag_the_engine_refuses_fails_at_once(tmp_path: Path) -> None:
    puller = CliPuller(stand_in(tmp_path, "echo 'Error response from daemon: No such image' >&2; exit 1"))
    with pytest.raises(EngineError, match="No such image"):
        puller.tag(f"{IMAGE}@{DIGEST}", Reference(IMAGE, "latest"))
    assert logged(tmp_path).count("tag") == 1


def test_no_docker_cli_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineError, match="docker CLI is not on this runner's PATH"):
        CliPuller({"PATH": str(tmp_path / "empty")})


def test_a_pull_started_ahead_runs_while_the_caller_goes_on_and_ends_as_a_pull(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    puller = CliPuller(stand_in(tmp_path, f'while [ ! -e "{gate}" ]; do sleep 0.05; done; exit 0'))
    pending = puller.start(IMAGE, DIGEST, 30)
    assert pending.digest == DIGEST
    time.sleep(0.2)  # the stand-in waits for the gate: start returned while the pull was still running
    assert logged(tmp_path) == ["pull", "--quiet", f"{IMAGE}@{DIGEST}"]
    gate.write_text("")
    pending.wait()


def test_a_pull_started_ahead_fails_when_waited_for_as_a_pull_would(tmp_path: Path) -> None:
    said = "Error response from daemon: received unexpected HTTP status: 503 Service Unavailable"
    pending = CliPuller(stand_in(tmp_path, f"echo '{said}' >&2; exit 1")).start(IMAGE, DIGEST, 30)
    with pytest.raises(RegistryError, match="pulling") as raised:
        pending.wait()
    assert raised.value.transient


def test_a_cancelled_pull_is_stopped_at_once(tmp_path: Path) -> None:
    puller = CliPuller(stand_in(tmp_path, f'echo $$ > "{tmp_path}/pid"; exec sleep 30'))
    pending = puller.start(IMAGE, DIGEST, 60)
    deadline = time.monotonic() + 10
    while not (tmp_path / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    pending.cancel()
    assert time.monotonic() - started < 5
    pid = int((tmp_path / "pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    pending.cancel()  # a second cancel, or one after the end, does nothing
