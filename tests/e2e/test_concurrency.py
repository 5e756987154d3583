"""Builds at the same time on one engine and one registry: every tag must still name its own commit.

A self-hosted runner, a shared daemon, or act running a workflow's jobs in parallel all put several builds on
one engine at once. Each round starts N builds of different commits of one repository together (and, in the
last test, two builds of the same commit); tests/support/races.py says what is checked after each round.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import registry_api
from build_contexts import unique
from races import build_all, check_round, commit
from registry_server import RegistryServer

BUILDS = 4
ROUNDS = 3


@pytest.mark.parametrize("load", ["false", "true"])
def test_builds_of_different_commits_at_once_keep_their_own_images(
    registry: RegistryServer, tmp_path: Path, load: str
) -> None:
    repository = unique("race")
    images = f"{registry.address}/{repository}"
    failures = []
    for round_ in range(ROUNDS):
        shas = [commit(round_, index) for index in range(BUILDS)]
        runs = build_all(tmp_path, images, shas, {"load": load, "tags": "nightly"})
        check_round(registry, repository, shas, runs)
        failures += [run.errors() for run in runs if run.code != 0]
    # Different commits never share a tag that must not move, so every build has a way to succeed.
    assert failures == []


def test_two_builds_of_one_commit_at_once_end_on_one_image(registry: RegistryServer, tmp_path: Path) -> None:
    repository = unique("twin")
    images = f"{registry.address}/{repository}"
    for round_ in range(ROUNDS):
        sha = commit(0x40 + round_, 0)
        # Two checkouts of one commit do not make the same image (file times, provenance), so the two
        # images differ and a mix-up would show.
        runs = build_all(tmp_path, images, [sha, sha], {"load": "false"})
        reported = check_round(registry, repository, [sha, sha], runs, one_commit=True)
        # The engine cannot give two images one name at the same moment: one build may fail, cleanly
        # (check_round has checked that it wrote no outputs and left no tag on another commit's image).
        assert reported, "\n\n".join(run.log for run in runs)
        held = registry_api.digest_of(registry.address, repository, f"sha-{sha[:7]}")
        assert held in {run.outputs["digest"] for run in runs if run.code == 0}
