"""run_build against a stand-in for buildx (a Python child), for what does not need an engine."""

from __future__ import annotations

import io
import sys
import threading
import time
from pathlib import Path

import pytest

from buildonce.docker.buildx import BuildCommand, Stopper, run_build
from buildonce.errors import BuildError
from buildonce.github.workflow import Console

# Prints a progress line, then waits; on SIGTERM it complains the way buildx does, and exits 1.
_FAKE_BUILDX = """
import signal, sys, time
def stopped(*_):
    print("ERROR: context canceled: driver not connecting", flush=True)
    sys.exit(1)
signal.signal(signal.SIGTERM, stopped)
print("#1 building", flush=True)
time.sleep(float(sys.argv[-1]))
"""


def fake(tmp_path: Path, script: str, *args: str) -> BuildCommand:
    files = ["--metadata-file", str(tmp_path / "metadata.json"), "--iidfile", str(tmp_path / "iid")]
    return BuildCommand(argv=[sys.executable, "-c", script, *files, *args], env={})


def test_a_stopped_build_hides_buildx_complaints_and_returns_none(tmp_path: Path) -> None:
    log = io.StringIO()
    stopper = Stopper()

    def stop_once_running() -> None:
        deadline = time.monotonic() + 20
        while "#1 building" not in log.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        stopper.stop()

    thread = threading.Thread(target=stop_once_running)
    thread.start()
    outcome = run_build(fake(tmp_path, _FAKE_BUILDX, "30"), {}, Console(stream=log), tmp_path, stopper)
    thread.join()
    assert outcome is None
    text = log.getvalue()
    assert "#1 building" in text
    assert "context canceled" not in text
    assert "The build was stopped; the reason follows." in text


def test_a_failed_build_names_buildx_error(tmp_path: Path) -> None:
    script = 'print("#1 building"); print("ERROR: failed to solve: nope"); raise SystemExit(1)'
    with pytest.raises(BuildError, match=r"exit 1\): ERROR: failed to solve: nope\. .*Nothing was pushed"):
        run_build(fake(tmp_path, script), {}, Console(stream=io.StringIO()), tmp_path)
