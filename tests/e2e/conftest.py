"""Fixtures for the end-to-end suite: the real Docker engine with buildx, and real registries.

Under ``CI=true`` a missing engine fails the run; elsewhere the suite is skipped with the reason, so that
the unit tests still run on a laptop without Docker.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_server import RegistryServer

TEST_USER = "buildonce"
TEST_PASSWORD = "not-a-real-secret-4821"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


def _engine_problem() -> str | None:
    for argv in (["docker", "info", "--format", "{{.ServerVersion}}"], ["docker", "buildx", "version"]):
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(argv)}: {exc}"
        if result.returncode != 0:
            return f"{' '.join(argv)}: {result.stderr.strip() or result.stdout.strip()}"
    return None


@pytest.fixture(scope="session")
def engine() -> None:
    problem = _engine_problem()
    if problem is None:
        return
    message = f"no Docker engine with buildx ({problem}); start one with scripts/dev-env up"
    if os.environ.get("CI", "").lower() == "true" or os.environ.get("BUILDONCE_REQUIRE_ENGINE") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def registry(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="session")
def auth_registry(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("auth-registry"), users={TEST_USER: TEST_PASSWORD}) as server:
        yield server
