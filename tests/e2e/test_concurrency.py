"""Builds at the same time on one engine and one registry: every tag must still name its own commit.

A self-hosted runner, a shared daemon, or act running a workflow's jobs in parallel all put several builds on
one engine at once. Each round below starts N builds of different commits of one repository together (and, in
the last test, two builds of the same commit), then checks in the registry, by the images' labels, that:
- every immutable tag holds the image of the commit it names;
- every run that succeeded reports the digest its immutable tag serves, and that digest is its commit's image;
- every run that failed failed cleanly: one ``::error::``, no outputs, and no tag on another commit's image;
- every mutable tag (``latest``, ``nightly``) holds one of the round's images, each under its own commit.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import registry_api
from action_run import Run, run_buildonce
from build_contexts import scratch_context, unique
from events import payload
from registry_server import RegistryServer

BUILDS = 4
ROUNDS = 3
REVISION = "org.opencontainers.image.revision"


def commit(round_: int, index: int) -> str:
    return f"{round_:02x}{index:02x}".ljust(40, "c")


def push_to_main(sha: str) -> dict[str, Any]:
    data = copy.deepcopy(payload("push-default"))
    data["after"] = sha
    data["head_commit"]["id"] = sha
    return data


def build_commit(tmp: Path, images: str, sha: str, inputs: dict[str, str], text: str | None = None) -> Run:
    workdir = scratch_context(tmp / f"{sha[:8]}-{unique('w')}", text=text if text is not None else f"commit {sha}")
    return run_buildonce(
        "build",
        workdir,
        event_name="push",
        payload=push_to_main(sha),
        env={"GITHUB_SHA": sha, "GITHUB_REF": "refs/heads/main"},
        inputs={"images": images, "artifact": "false", "retry-wait-seconds": "0.2", "timeout-minutes": "2", **inputs},
    )


def build_all(tmp: Path, images: str, shas: list[str], inputs: dict[str, str], text: str | None = None) -> list[Run]:
    with ThreadPoolExecutor(max_workers=len(shas)) as pool:
        futures = [pool.submit(build_commit, tmp, images, sha, inputs, text) for sha in shas]
        return [future.result() for future in futures]


def revision_of(server: RegistryServer, repository: str, reference: str) -> str:
    (config,) = registry_api.configs(server.address, repository, reference)
    return str(config["config"]["Labels"][REVISION])


def check_round(
    server: RegistryServer, repository: str, shas: list[str], runs: list[Run], *, one_commit: bool = False
) -> dict[str, str]:
    """The invariants of the module docstring; returns the digest each successful run reported, by commit.

    With ``one_commit``, two runs of one commit whose pushes overlap may each verify its own image before
    the other's push lands: the tag then holds one of the two, both that commit's, each pullable by digest.
    """
    reported: dict[str, str] = {}
    for sha, run in zip(shas, runs, strict=True):
        tag = f"sha-{sha[:7]}"
        held = registry_api.digest_of(server.address, repository, tag)
        if held is not None:
            assert revision_of(server, repository, held) == sha, f"{tag} holds another commit's image\n{run.log}"
        if run.code == 0:
            digest = run.outputs["digest"]
            if not one_commit:
                assert held == digest, f"{tag} serves {held}, the run reported {digest}\n{run.log}"
            assert revision_of(server, repository, digest) == sha
            assert run.outputs["image"].endswith(f"@{digest}")
            reported[sha] = digest
        else:
            assert run.code == 1, run.log
            assert len(run.errors()) == 1, run.log
            assert run.outputs == {}, run.log
    for mutable in ("latest", "nightly"):
        held = registry_api.digest_of(server.address, repository, mutable)
        if held is None:
            continue
        owner = revision_of(server, repository, held)
        assert owner in shas, f"{mutable} holds {held} of {owner}, not of this round's commits"
        if not one_commit:
            assert reported.get(owner) == held, f"{mutable} holds {held} of {owner}, which no run of it reported"
    return reported


@pytest.mark.parametrize("load", ["false", "true"])
def test_builds_of_different_commits_at_once_keep_their_own_images(
    registry: RegistryServer, tmp_path: Path, load: str
) -> None:
    repository = unique("race")
    images = f"{registry.address}/{repository}"
    succeeded = 0
    for round_ in range(ROUNDS):
        shas = [commit(round_, index) for index in range(BUILDS)]
        runs = build_all(tmp_path, images, shas, {"load": load, "tags": "nightly"})
        succeeded += len(check_round(registry, repository, shas, runs))
    # Different commits never share a tag that must not move, so every build has a way to succeed.
    assert succeeded == ROUNDS * BUILDS


def test_two_builds_of_one_commit_at_once_end_on_one_image(registry: RegistryServer, tmp_path: Path) -> None:
    repository = unique("twin")
    images = f"{registry.address}/{repository}"
    for round_ in range(ROUNDS):
        sha = commit(0x40 + round_, 0)
        # Two checkouts of one commit do not make the same image (file times, provenance), so the two
        # images differ and a mix-up would show.
        runs = build_all(tmp_path, images, [sha, sha], {"load": "false"})
        reported = check_round(registry, repository, [sha, sha], runs, one_commit=True)
        # The engine cannot give two images one name at the same moment: one build may fail, cleanly.
        assert reported, "\n\n".join(run.log for run in runs)
        for run in runs:
            if run.code != 0:
                assert "gave its image the same name at the same moment" in run.errors()[0], run.log
        held = registry_api.digest_of(registry.address, repository, f"sha-{sha[:7]}")
        assert held in {run.outputs["digest"] for run in runs if run.code == 0}
