"""Fixtures for the end-to-end suite: the real Docker engine with buildx, and real registries.

Under ``CI=true`` a missing engine fails the run; elsewhere the suite is skipped with the reason, so that
the unit tests still run on a laptop without Docker.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import base_images
import pytest
from base_images import BUSYBOX_IMAGE
from faultproxy import FaultProxy
from registry_server import SESSION_ADDRESSES, TEST_PASSWORD, TEST_USER, RegistryServer


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


def _loopback_images() -> set[str]:
    """Local images named after a registry on 127.0.0.1, as references (or ids when untagged)."""
    try:
        listing = subprocess.run(
            ["docker", "image", "ls", "--format", "{{.Repository}} {{.Tag}} {{.ID}}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return set()
    names = set()
    for line in listing.stdout.splitlines():
        repository, tag, image_id = [*line.split(), "", "", ""][:3]
        if repository.startswith("127.0.0.1:"):
            names.add(f"{repository}:{tag}" if tag != "<none>" else image_id)
    return names


@pytest.fixture(scope="session", autouse=True)
def _forget_pushed_images() -> Iterator[None]:
    """Untag what this session pushed to its throwaway registries, so repeated runs keep the engine lean.

    Only names of this session's own registries: another suite may be running on the same engine.
    """
    before = _loopback_images()
    yield
    ours = tuple(f"{address}/" for address in SESSION_ADDRESSES)
    leftover = sorted(name for name in _loopback_images() - before if name.startswith(ours))
    for start in range(0, len(leftover), 200):
        subprocess.run(
            ["docker", "image", "rm", "-f", *leftover[start : start + 200]], capture_output=True, check=False
        )


@pytest.fixture(scope="session")
def registry(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="session")
def auth_registry(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("auth-registry"), users={TEST_USER: TEST_PASSWORD}) as server:
        yield server


@pytest.fixture
def fault_proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the session registry; push to ``fault_proxy.address``."""
    with FaultProxy(registry.address) as proxy:
        SESSION_ADDRESSES.add(proxy.address)
        yield proxy


@pytest.fixture(scope="session")
def busybox_image(engine: None) -> str:
    """A base image with a shell for RUN steps, made from Debian's busybox-static (nothing is pulled)."""
    try:
        base_images.busybox_image(BUSYBOX_IMAGE)
    except base_images.MissingToolError as exc:
        pytest.fail(str(exc))
    return BUSYBOX_IMAGE
