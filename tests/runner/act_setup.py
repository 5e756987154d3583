"""What a run of act here needs, as plain functions: the runner suite's fixtures and bench/act_matrix.py
both set up with them.

The action under test is a copy of this work tree, the examples' base image is served by a registry on
loopback, and every action the workflows use that would need the internet is a local stand-in
(rewrites.py lists them).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from actrun import Act
from base_images import busybox_rootfs
from registry_server import TEST_PASSWORD, TEST_USER
from rewrites import BASE_REPOSITORY, EXAMPLES, ROOT, RUNNER_WORKFLOWS, local_repositories

APPLETS = ("sh", "cat", "echo", "grep", "ls", "true")
"""The commands the example image's tests and the stand-in base need, as links to busybox-static."""


def copy_own_action(scratch: Path) -> Path:
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


def push_base_image(address: str, scratch: Path) -> None:
    """The examples' base image, for linux/amd64 and linux/arm64, pushed to the registry at ``address``."""
    rootfs = busybox_rootfs(APPLETS, directories=())
    context = scratch / "base-context"
    context.mkdir()
    (context / "rootfs.tar").write_bytes(rootfs)
    (context / "Dockerfile").write_text('FROM scratch\nADD rootfs.tar /\nCMD ["sh"]\n')
    reference = f"{address}/{BASE_REPOSITORY}"
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


def make_act(binary: str, scratch: Path, own_action: Path) -> Act:
    """act with the suite's flags: the artifact and cache servers under ``scratch``, every action mapped."""
    artifacts = scratch / "artifacts"
    artifacts.mkdir()
    return Act(
        binary=binary,
        scratch=scratch,
        artifact_dir=artifacts,
        cache_dir=scratch / "cache-server",
        local_repositories=local_repositories(own_action, [*EXAMPLES.glob("*.yml"), *RUNNER_WORKFLOWS.glob("*.yml")]),
        secrets={"GITHUB_TOKEN": TEST_PASSWORD},
        actor=TEST_USER,
    )
