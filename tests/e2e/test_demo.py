"""scripts/demo, the README's first command: it succeeds, twice, and the digest it prints is the registry's."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import registry_api
from registry_server import RegistryServer

ROOT = Path(__file__).resolve().parents[2]
DEMO_REPOSITORY = "buildonce-demo/widget"
DEMO_TAG = "pr-42-3e5c474"
"""Pull request #42 at head 3e5c474…, as examples/events/pull-request.json says."""


def run_demo(registry: RegistryServer, work: Path) -> str:
    env = {**os.environ, "BUILDONCE_REGISTRY": registry.address, "BUILDONCE_DEMO_DIR": str(work)}
    result = subprocess.run(
        [str(ROOT / "scripts" / "demo")],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    return log


def printed(log: str, label: str) -> str:
    values: list[str] = re.findall(rf"^{label} digest:\s+(sha256:[0-9a-f]{{64}})$", log, flags=re.MULTILINE)
    assert len(values) == 1, log
    return values[0]


def test_demo_builds_pushes_and_consumes_the_same_digest_twice(registry: RegistryServer, tmp_path: Path) -> None:
    first = run_demo(registry, tmp_path / "first")
    served = registry_api.digest_of(registry.address, DEMO_REPOSITORY, DEMO_TAG)
    assert served is not None
    assert printed(first, "build") == printed(first, "registry") == printed(first, "consume") == served
    assert re.search(r"^  reused\s+false$", first, flags=re.MULTILINE), first
    # The step summary and the outputs file are shown as the runner would read them.
    assert "### buildonce: built and pushed" in first
    assert re.search(rf"^  immutable-tag\s+{DEMO_TAG}$", first, flags=re.MULTILINE)
    assert re.search(r"^  source\s+registry$", first, flags=re.MULTILINE)
    assert (tmp_path / "first" / "build" / "buildonce-artifacts" / "widget-image.tar").is_file()
    # A newcomer's first run says nothing alarming: the sample is dated, so nothing falls back to the clock.
    assert "::warning" not in first
    assert "org.opencontainers.image.created=2026-01-01T00:00:00Z" in first

    # The same commit again: the image is reused, not rebuilt, and the registry still serves that digest.
    second = run_demo(registry, tmp_path / "second")
    assert re.search(r"^  reused\s+true$", second, flags=re.MULTILINE), second
    assert "### buildonce: reused" in second
    assert printed(second, "build") == printed(second, "registry") == served
