"""Reuse by build key end to end: real git work trees, the real engine and buildx, a Distribution registry.

Each test makes a git repository in a temporary directory whose build context is ``app/``; the runner's
files (``.runner``) and the docs live outside it, as a checkout's would.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import registry_api
from action_run import Run, run_on_fixture
from build_contexts import unique
from events import payload
from registry_server import RegistryServer

from buildonce.docker.buildx import buildx_program
from buildonce.docker.config import docker_config_dir

FAST = {"retry-wait-seconds": "0.2", "timeout-minutes": "2"}
PR_MERGE = "5" * 40  # the pull-request fixture's merge commit, which its build checks out
NAMESPACE = "dev.buildonce"
REVISION = "org.opencontainers.image.revision"


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def make_repo(root: Path, files: dict[str, str] | None = None) -> Path:
    """A git repository with a FROM scratch context in app/ and a docs file outside it, committed."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "ci@example.com")
    git(root, "config", "user.name", "CI")
    (root / ".gitignore").write_text(".runner/\n")
    commit(
        root,
        {
            "app/Dockerfile": "FROM scratch\nARG FLAVOUR=plain\nCOPY hello.txt /hello.txt\n",
            "app/hello.txt": "hello",
            "docs/README.md": "# widget\n",
            **(files or {}),
        },
    )
    return root


def commit(repo: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "change")
    return git(repo, "rev-parse", "HEAD^{tree}")


def push_event(sha: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A push to main of ``sha``: the payload and the runner's GITHUB_SHA/GITHUB_REF."""
    data = payload("push-default")
    data["after"] = sha
    data["head_commit"] = {**data["head_commit"], "id": sha}
    return data, {"GITHUB_SHA": sha, "GITHUB_REF": "refs/heads/main"}


def docker_calls(directory: Path) -> tuple[dict[str, str], Path]:
    """A PATH whose ``docker``, and a Docker config whose buildx plugin, write each command line to a log,
    then run the real one: the proof of whether buildx ran at all (buildonce runs the plugin itself)."""
    real = shutil.which("docker")
    assert real is not None
    real_plugin = buildx_program(dict(os.environ))
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "calls.log"
    log.write_text("")
    wrapper = directory / "docker"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(log))}\nexec {shlex.quote(real)} "$@"\n')
    wrapper.chmod(0o755)
    config = directory / "docker-config"
    (config / "cli-plugins").mkdir(parents=True)
    own = docker_config_dir(dict(os.environ)) / "buildx"
    if own.is_dir():
        (config / "buildx").symlink_to(own)
    plugin = config / "cli-plugins" / "docker-buildx"
    run_real = " ".join(shlex.quote(part) for part in real_plugin)
    plugin.write_text(f'#!/bin/sh\nprintf "buildx %s\\n" "$*" >> {shlex.quote(str(log))}\nexec {run_real} "$@"\n')
    plugin.chmod(0o755)
    return {"PATH": f"{directory}{os.pathsep}{os.environ.get('PATH', '')}", "DOCKER_CONFIG": str(config)}, log


def build(
    repo: Path,
    fixture: str,
    image: str,
    inputs: dict[str, str] | None = None,
    sha: str = "",
    env: dict[str, str] | None = None,
) -> Run:
    data, runner = push_event(sha) if sha else (None, {})
    run = run_on_fixture(
        "build",
        repo,
        fixture,
        {"images": image, "context": "app", **FAST, **(inputs or {})},
        env={**runner, **(env or {})},
        data=data,
    )
    assert run.code == 0, run.log
    return run


def layers(address: str, repository: str, digest: str) -> list[list[str]]:
    """The layer digests of every platform's image, in the index's order."""
    top = registry_api.manifest(address, repository, digest)
    children = [top]
    if "manifests" in top:
        children = [
            registry_api.manifest(address, repository, entry["digest"])
            for entry in top["manifests"]
            if (entry.get("platform") or {}).get("os") != "unknown"
        ]
    return [[layer["digest"] for layer in child["layers"]] for child in children]


def labels_of(address: str, repository: str, digest: str) -> dict[str, str]:
    (config, *_) = registry_api.configs(address, repository, digest)
    found: dict[str, str] = config["config"]["Labels"]
    return found


def built(run: Run) -> bool:
    """Whether buildx ran: the build reports an image id and its own metadata only when it did."""
    return bool(run.outputs["imageid"]) or "Built sha256" in run.log


def test_merge_queue_image_is_reused_for_the_push_of_its_commit(registry: RegistryServer, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    name = unique("mq")
    image = f"{registry.address}/{name}"
    path, calls = docker_calls(tmp_path / "bin")
    queued = build(repo, "merge-group", image, env=path)
    assert [line for line in calls.read_text().splitlines() if line.startswith("buildx build")]  # the log works
    calls.write_text("")
    assert queued.outputs["build-key"]
    assert queued.outputs["promoted-from"] == ""
    key = queued.outputs["build-key"]
    assert registry_api.digest_of(registry.address, name, f"buildkey-{key}") == queued.outputs["digest"]
    assert labels_of(registry.address, name, queued.outputs["digest"])[f"{NAMESPACE}.build-key"] == key
    blobs_before = layers(registry.address, name, queued.outputs["digest"])

    pushed = build(repo, "push-default", image, sha="6" * 40, env=path)
    digest = queued.outputs["digest"]
    assert pushed.outputs["digest"] == digest
    assert pushed.outputs["reused"] == "true"
    assert pushed.outputs["promoted-from"] == ""
    assert not built(pushed)
    assert not [line for line in calls.read_text().splitlines() if line.startswith("buildx build")]
    assert "#1 " not in pushed.log  # no build progress at all
    assert layers(registry.address, name, digest) == blobs_before
    for tag in ("latest", "sha-6666666"):
        assert registry_api.digest_of(registry.address, name, tag) == digest
    assert "same build key" in pushed.summary


def test_pull_request_image_is_promoted_to_the_squash_commit(registry: RegistryServer, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    name = unique("squash")
    image = f"{registry.address}/{name}"
    tested = build(repo, "pull-request", image)
    tested_digest = tested.outputs["digest"]
    squash = "0123456789abcdef" * 2 + "01234567"
    # The squash commit on main has the very tree the pull request's merge commit had.
    promoted = build(repo, "push-default", image, sha=squash)
    digest = promoted.outputs["digest"]
    assert promoted.outputs["promoted-from"] == tested_digest
    assert promoted.outputs["build-key"] == tested.outputs["build-key"]
    assert promoted.outputs["reused"] == "false"
    assert not built(promoted)
    assert digest != tested_digest
    assert layers(registry.address, name, digest) == layers(registry.address, name, tested_digest)
    labels = labels_of(registry.address, name, digest)
    assert labels[REVISION] == squash
    assert labels[f"{NAMESPACE}.promoted-from"] == tested_digest
    assert labels[f"{NAMESPACE}.branch"] == "main"
    assert f"{NAMESPACE}.pr.number" not in labels
    assert f"{NAMESPACE}.pr.head-sha" not in labels
    tested_labels = labels_of(registry.address, name, tested_digest)
    assert labels["org.opencontainers.image.created"] == tested_labels["org.opencontainers.image.created"]
    for tag in ("latest", "sha-0123456"):
        assert registry_api.digest_of(registry.address, name, tag) == digest
    # The tested image is untouched, and its key still finds it.
    assert tested_labels[REVISION] == PR_MERGE
    assert registry_api.digest_of(registry.address, name, "pr-123-abc1234") == tested_digest
    assert registry_api.digest_of(registry.address, name, f"buildkey-{promoted.outputs['build-key']}") == tested_digest
    assert "promoted" in promoted.summary

    data, env = push_event(squash)
    consumed = run_on_fixture(
        "consume", tmp_path / "downstream", "push-default", {"image": image, **FAST}, env=env, data=data
    )
    assert consumed.code == 0, consumed.log
    assert consumed.outputs["digest"] == digest
    verified = run_on_fixture(
        "verify", tmp_path / "verify", "push-default", {"image": f"{image}@{tested_digest}", "sha": PR_MERGE, **FAST}
    )
    assert verified.code == 0, verified.log
    refused = run_on_fixture(
        "verify", tmp_path / "verify2", "push-default", {"image": f"{image}@{tested_digest}", "sha": squash, **FAST}
    )
    assert refused.code == 1


def test_a_docs_only_commit_is_promoted(registry: RegistryServer, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    image = f"{registry.address}/{unique('docs')}"
    first = build(repo, "push-default", image, sha="a" * 40)
    assert built(first)
    commit(repo, {"docs/README.md": "# widget\n\nNow documented.\n", ".github/workflows/ci.yml": "on: push\n"})
    second = build(repo, "push-default", image, sha="b" * 40)
    assert second.outputs["promoted-from"] == first.outputs["digest"]
    assert not built(second)


@pytest.mark.parametrize(
    "change",
    ["inside the context", "a build argument", "the Dockerfile outside the context", "a dockerignored file"],
)
def test_a_change_the_key_covers_is_built(registry: RegistryServer, tmp_path: Path, change: str) -> None:
    extra = {
        "app/.dockerignore": "ignored.txt\n",
        "app/ignored.txt": "not sent to the build",
        "docker/Dockerfile": "FROM scratch\nCOPY hello.txt /greeting.txt\n",
    }
    repo = make_repo(tmp_path / "repo", extra)
    image = f"{registry.address}/{unique('changed')}"
    inputs = {"file": "docker/Dockerfile"} if "outside" in change else {}
    first = build(repo, "push-default", image, inputs, sha="a" * 40)
    assert built(first)
    if change == "inside the context":
        commit(repo, {"app/hello.txt": "hello again"})
    elif change == "a dockerignored file":
        commit(repo, {"app/ignored.txt": "changed, and still not sent"})
    elif "outside" in change:
        commit(repo, {"docker/Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\n"})
    else:
        inputs = {"build-args": "FLAVOUR=spicy"}
    second = build(repo, "push-default", image, inputs, sha="b" * 40)
    assert second.outputs["promoted-from"] == ""
    assert second.outputs["build-key"] != first.outputs["build-key"]
    assert built(second)
    assert "no image with this build key" in second.summary


def test_uncommitted_changes_in_the_context_give_no_key(registry: RegistryServer, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    image = f"{registry.address}/{unique('dirty')}"
    build(repo, "push-default", image, sha="a" * 40)
    (repo / "app" / "generated.txt").write_text("made by an earlier step")
    second = build(repo, "push-default", image, sha="b" * 40)
    assert second.outputs["build-key"] == ""
    assert built(second)
    assert any("No build key" in notice and "generated.txt" in notice for notice in second.notices())
    assert "there is no build key" in second.summary


@pytest.mark.parametrize(
    ("fixture", "inputs", "why"),
    [
        ("schedule", {}, "reuse is commit"),
        ("push-default", {"reuse": "off"}, "reuse: off"),
        ("push-default", {"no-cache": "true"}, "no-cache"),
        ("push-default", {"rebuild": "true"}, "rebuild"),
    ],
)
def test_what_the_key_cannot_see_is_always_built(
    registry: RegistryServer, tmp_path: Path, fixture: str, inputs: dict[str, str], why: str
) -> None:
    repo = make_repo(tmp_path / "repo")
    image = f"{registry.address}/{unique('always')}"
    tested = build(repo, "pull-request", image)
    again = build(repo, fixture, image, inputs, sha="f" * 40 if fixture == "push-default" else "")
    assert again.outputs["build-key"] == tested.outputs["build-key"]
    assert again.outputs["promoted-from"] == ""
    assert again.outputs["reused"] == "false"
    assert built(again)
    assert why in again.summary


def test_a_multi_platform_image_is_promoted_per_platform(registry: RegistryServer, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    name = unique("multi-promote")
    image = f"{registry.address}/{name}"
    inputs = {"platforms": "linux/amd64,linux/arm64"}
    tested = build(repo, "pull-request", image, inputs)
    promoted = build(repo, "push-default", image, inputs, sha="c" * 40)
    digest = promoted.outputs["digest"]
    assert promoted.outputs["promoted-from"] == tested.outputs["digest"]
    assert not built(promoted)
    top = registry_api.manifest(registry.address, name, digest)
    assert "manifests" in top
    assert registry_api.platforms(registry.address, name, digest) == ["linux/amd64", "linux/arm64"]
    assert layers(registry.address, name, digest) == layers(registry.address, name, tested.outputs["digest"])
    configs = registry_api.configs(registry.address, name, digest)
    assert {config["architecture"] for config in configs} == {"amd64", "arm64"}
    assert all(config["config"]["Labels"][REVISION] == "c" * 40 for config in configs)
    tested_children = {
        entry["digest"]
        for entry in registry_api.manifest(registry.address, name, tested.outputs["digest"])["manifests"]
    }
    assert not tested_children & {entry["digest"] for entry in top["manifests"]}


def test_two_pushes_of_one_key_at_once_never_put_two_digests_under_one_tag(
    registry: RegistryServer, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    name = unique("race")
    image = f"{registry.address}/{name}"
    tested = build(repo, "pull-request", image)
    runs: dict[str, Run] = {}

    pushes = (("one", "d" * 40), ("again", "d" * 40), ("other", "e" * 40))
    for label, _ in pushes:
        # A checkout of its own for each run (the runner's files are in the work tree), with the same tree.
        subprocess.run(["git", "clone", "-q", str(repo), str(tmp_path / label)], check=True, timeout=60)

    def push(label: str, sha: str) -> None:
        data, env = push_event(sha)
        inputs = {"images": image, "context": "app", **FAST}
        runs[label] = run_on_fixture("build", tmp_path / label, "push-default", inputs, env=env, data=data)

    # Two runs of one commit (a re-run beside the first), and a run of another commit with the same tree.
    threads = [threading.Thread(target=push, args=push_args) for push_args in pushes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert all(run.code == 0 for run in runs.values()), [run.log for run in runs.values()]
    assert runs["one"].outputs["digest"] == runs["again"].outputs["digest"]
    assert registry_api.digest_of(registry.address, name, "sha-ddddddd") == runs["one"].outputs["digest"]
    assert registry_api.digest_of(registry.address, name, "sha-eeeeeee") == runs["other"].outputs["digest"]
    assert runs["other"].outputs["digest"] != runs["one"].outputs["digest"]
    for run in runs.values():
        assert run.outputs["promoted-from"] in (tested.outputs["digest"], "")
        assert not built(run)


def test_a_new_pull_request_head_with_the_same_tree_is_promoted_loaded_and_saved(
    registry: RegistryServer, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    name = unique("pr-head")
    image = f"{registry.address}/{name}"
    first = build(repo, "pull-request", image)
    commit(repo, {"docs/README.md": "# widget\n\nReviewed.\n"})
    data = payload("pull-request")
    head = "def5678" + "9" * 33
    data["pull_request"]["head"]["sha"] = head
    data["pull_request"]["merge_commit_sha"] = "7" * 40
    env = {"GITHUB_SHA": "7" * 40, "GITHUB_REF": "refs/pull/123/merge"}
    inputs = {"images": image, "context": "app", **FAST}
    second = run_on_fixture("build", repo, "pull-request", inputs, env=env, data=data)
    assert second.code == 0, second.log
    assert second.outputs["promoted-from"] == first.outputs["digest"]
    assert second.outputs["immutable-tag"] == "pr-123-def5678"
    digest = second.outputs["digest"]
    labels = labels_of(registry.address, name, digest)
    assert labels[f"{NAMESPACE}.pr.head-sha"] == head
    assert labels[REVISION] == "7" * 40
    # Pulled into the engine under the run's names, and saved as the artifact a fork-less downstream would use.
    local = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", f"{image}:pr-123-def5678"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert local.returncode == 0, local.stderr
    assert f'"{REVISION}":"{"7" * 40}"' in local.stdout
    artifact = Path(second.outputs["artifact-path"])
    assert artifact.is_file()
    assert (artifact.parent / (artifact.name + ".sha256")).read_text().split()[0] == second.outputs["artifact-sha256"]
