"""Rounds of builds at the same time on one engine and one registry, and what must hold after each.

After a round, checked in the registry by the images' labels:
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

import registry_api
from action_run import Run, run_buildonce
from build_contexts import scratch_context, unique
from events import payload
from registry_server import RegistryServer

REVISION = "org.opencontainers.image.revision"


def commit(round_: int, index: int) -> str:
    return f"{round_:02x}{index:02x}".ljust(40, "c")


def push_to_main(sha: str) -> dict[str, Any]:
    data = copy.deepcopy(payload("push-default"))
    data["after"] = sha
    data["head_commit"]["id"] = sha
    return data


def build_commit(
    tmp: Path, images: str, sha: str, inputs: dict[str, str], text: str | None = None, env: dict[str, str] | None = None
) -> Run:
    workdir = scratch_context(tmp / f"{sha[:8]}-{unique('w')}", text=text if text is not None else f"commit {sha}")
    return run_buildonce(
        "build",
        workdir,
        event_name="push",
        payload=push_to_main(sha),
        env={"GITHUB_SHA": sha, "GITHUB_REF": "refs/heads/main", **(env or {})},
        inputs={"images": images, "artifact": "false", "retry-wait-seconds": "0.2", "timeout-minutes": "2", **inputs},
    )


def build_all(
    tmp: Path, images: str, shas: list[str], inputs: dict[str, str], env: dict[str, str] | None = None
) -> list[Run]:
    """Build each commit in a process of its own, all at once."""
    with ThreadPoolExecutor(max_workers=len(shas)) as pool:
        futures = [pool.submit(build_commit, tmp, images, sha, inputs, None, env) for sha in shas]
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
