"""``buildonce build`` end to end: the real engine, buildx and Distribution registry, checked over HTTP."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import registry_api
from action_run import Run, run_on_fixture
from build_contexts import scratch_context, unique
from events import payload
from registry_server import RegistryServer

FAST_RETRY = {"retry-wait-seconds": "0.2", "timeout-minutes": "2"}


def build(
    workdir: Path,
    fixture: str,
    *,
    images: str,
    inputs: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    data: dict[str, Any] | None = None,
) -> Run:
    inputs = {"images": images, **FAST_RETRY, **(inputs or {})}
    return run_on_fixture("build", workdir, fixture, inputs, env=env, data=data)


def assert_served(server: RegistryServer, repository: str, tags: list[str], digest: str) -> None:
    for tag in tags:
        assert registry_api.digest_of(server.address, repository, tag) == digest, tag


def pull_by_digest(reference: str) -> None:
    result = subprocess.run(["docker", "pull", "-q", reference], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_pull_request_build_push_verify_and_artifact(registry: RegistryServer, tmp_path: Path) -> None:
    repo = unique("pr")
    run = build(scratch_context(tmp_path), "pull-request", images=f"{registry.address}/{repo}")
    assert run.code == 0, run.log
    digest = run.outputs["digest"]
    assert digest.startswith("sha256:")
    assert run.outputs["immutable-tag"] == "pr-123-abc1234"
    assert run.outputs["tags"] == f"{registry.address}/{repo}:pr-123-abc1234"
    assert run.outputs["image"] == f"{registry.address}/{repo}@{digest}"
    assert run.outputs["pushed"] == "true"
    assert run.outputs["attempts"] == "1"
    assert registry_api.tags(registry.address, repo) == ["pr-123-abc1234"]
    assert_served(registry, repo, ["pr-123-abc1234"], digest)
    (config,) = registry_api.configs(registry.address, repo, digest)
    labels = config["config"]["Labels"]
    assert labels["org.opencontainers.image.revision"] == "5" * 40
    assert labels["dev.buildonce.pr.number"] == "123"
    assert labels["dev.buildonce.pr.head-sha"] == "abc1234" + "a" * 33
    assert labels == json.loads(run.outputs["json"])["labels"]
    pull_by_digest(run.outputs["image"])
    artifact = Path(run.outputs["artifact-path"])
    assert artifact.is_file()
    assert run.outputs["artifact-name"] == f"{repo}-pr-123-abc1234"
    assert (artifact.parent / (artifact.name + ".sha256")).read_text().split()[0] == run.outputs["artifact-sha256"]
    assert "| Digest |" in run.summary
    assert digest in run.summary


def test_feature_branch_push(registry: RegistryServer, tmp_path: Path) -> None:
    repo = unique("branch")
    run = build(scratch_context(tmp_path), "push-branch", images=f"{registry.address}/{repo}")
    assert run.code == 0, run.log
    assert registry_api.tags(registry.address, repo) == ["feature-add-new-feature-abc1234"]
    assert_served(registry, repo, ["feature-add-new-feature-abc1234"], run.outputs["digest"])
    (config,) = registry_api.configs(registry.address, repo, run.outputs["digest"])
    labels = config["config"]["Labels"]
    assert labels["dev.buildonce.branch"] == "feature/Add_New-Feature"
    assert labels["org.opencontainers.image.created"] == "2026-03-04T09:20:30Z"
    pull_by_digest(run.outputs["image"])


def test_a_source_date_epoch_build_arg_dates_label_and_config(registry: RegistryServer, tmp_path: Path) -> None:
    repo = unique("epoch")
    inputs = {"build-args": "SOURCE_DATE_EPOCH=1700000000"}
    run = build(scratch_context(tmp_path), "push-branch", images=f"{registry.address}/{repo}", inputs=inputs)
    assert run.code == 0, run.log
    (config,) = registry_api.configs(registry.address, repo, run.outputs["digest"])
    assert config["config"]["Labels"]["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert config["created"].startswith("2023-11-14T22:13:20")


def test_default_branch_gets_latest_and_sha_in_two_images(registry: RegistryServer, tmp_path: Path) -> None:
    first, second = unique("main-a"), unique("main-b")
    images = f"{registry.address}/{first}\n{registry.address}/{second}"
    run = build(scratch_context(tmp_path), "push-default", images=images, inputs={"tags": "stable"})
    assert run.code == 0, run.log
    digest = run.outputs["digest"]
    for repo in (first, second):
        assert sorted(registry_api.tags(registry.address, repo)) == ["latest", "sha-0123456", "stable"]
        assert_served(registry, repo, ["latest", "sha-0123456", "stable"], digest)
    assert run.outputs["artifact"] == "false"
    assert run.outputs["artifact-path"] == ""
    pull_by_digest(f"{registry.address}/{second}@{digest}")


def test_semver_tag(registry: RegistryServer, tmp_path: Path) -> None:
    repo = unique("semver")
    run = build(scratch_context(tmp_path), "push-tag-semver", images=f"{registry.address}/{repo}")
    assert run.code == 0, run.log
    assert sorted(registry_api.tags(registry.address, repo)) == ["1", "1.2", "1.2.3", "sha-fedcba9"]
    assert_served(registry, repo, ["1", "1.2", "1.2.3", "sha-fedcba9"], run.outputs["digest"])
    assert run.outputs["version"] == "1.2.3"


def test_multi_platform(registry: RegistryServer, tmp_path: Path) -> None:
    repo = unique("multi")
    run = build(
        scratch_context(tmp_path),
        "push-default",
        images=f"{registry.address}/{repo}",
        inputs={"platforms": "linux/amd64,linux/arm64"},
    )
    assert run.code == 0, run.log
    digest = run.outputs["digest"]
    assert registry_api.platforms(registry.address, repo, digest) == ["linux/amd64", "linux/arm64"]
    assert_served(registry, repo, ["latest", "sha-0123456"], digest)
    configs = registry_api.configs(registry.address, repo, digest)
    assert {config["architecture"] for config in configs} == {"amd64", "arm64"}
    assert all(
        config["config"]["Labels"]["org.opencontainers.image.revision"] == "0123456789abcdef" * 2 + "01234567"
        for config in configs
    )
    pull_by_digest(f"{registry.address}/{repo}@{digest}")


def test_rerun_of_the_same_commit_reuses_the_image(registry: RegistryServer, tmp_path: Path) -> None:
    repo = unique("rerun")
    context = scratch_context(tmp_path / "ctx")
    first = build(context, "push-branch", images=f"{registry.address}/{repo}")
    assert first.code == 0, first.log
    (context / "hello.txt").write_text("changed, but the same commit")
    second = build(context, "push-branch", images=f"{registry.address}/{repo}")
    assert second.code == 0, second.log
    assert second.outputs["digest"] == first.outputs["digest"]
    assert second.outputs["reused"] == "true"
    # The build started beside the registry check, which stopped it (or threw its result away).
    assert "Pushed" not in second.log.split("Image reused")[-1]
    assert "Built sha256" not in second.log or "The build was stopped;" not in second.log
    assert "context canceled" not in second.log
    # The outputs describe the image reported, labels included: the first run's.
    assert json.loads(second.outputs["json"])["labels"] == json.loads(first.outputs["json"])["labels"]
    assert any("already holds" in notice for notice in second.notices())
    assert "reused" in second.summary
    forced = build(context, "push-branch", images=f"{registry.address}/{repo}", inputs={"rebuild": "true"})
    assert forced.code == 0, forced.log
    assert forced.outputs["reused"] == "false"
    assert "Built sha256" in forced.log


def build_two_commits_one_tag(
    registry: RegistryServer, repo: str, tmp_path: Path, inputs: dict[str, str] | None = None
) -> tuple[Run, Run]:
    """Build the branch fixture's commit, then another commit whose sha starts the same way, and so gets the
    same 7-character immutable tag; the second build gets ``inputs``."""
    first = build(scratch_context(tmp_path / "a"), "push-branch", images=f"{registry.address}/{repo}")
    assert first.code == 0, first.log
    other = payload("push-branch")
    other["after"] = "abc1234" + "f" * 33
    second = build(
        scratch_context(tmp_path / "b", "other"),
        "push-branch",
        images=f"{registry.address}/{repo}",
        inputs=inputs,
        env={"GITHUB_SHA": other["after"]},
        data=other,
    )
    return first, second


def test_immutable_tag_of_another_commit_is_refused(registry: RegistryServer, tmp_path: Path) -> None:
    repo = unique("taken")
    first, run = build_two_commits_one_tag(registry, repo, tmp_path)
    assert run.code == 1
    (error,) = run.errors()
    assert "abc1234def5678abc1234def5678abc1234def56" in error
    assert "abc1234" + "f" * 33 in error
    assert "allow-overwrite" in error
    assert registry_api.digest_of(registry.address, repo, "feature-add-new-feature-abc1234") == first.outputs["digest"]
    assert run.outputs == {}


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ({"context": "missing-dir"}, "input 'context'"),
        ({"file": "nope/Dockerfile"}, "input 'file'"),
        ({"platforms": "linux/banana"}, "input 'platforms'"),
        ({"build-args": "NOT A BUILD ARG"}, "input 'build-args'"),
        ({"images": "Bad/Name"}, "input 'images'"),
    ],
)
def test_bad_input_fails_clearly_and_pushes_nothing(
    registry: RegistryServer, tmp_path: Path, inputs: dict[str, str], fragment: str
) -> None:
    repo = unique("bad")
    run = build(scratch_context(tmp_path), "push-branch", images=f"{registry.address}/{repo}", inputs=inputs)
    assert run.code == 1
    (error,) = run.errors()
    assert fragment in error
    assert registry_api.tags(registry.address, repo) == []
    assert run.outputs == {}


def test_build_error_is_not_retried(registry: RegistryServer, tmp_path: Path) -> None:
    repo = unique("broken")
    context = scratch_context(tmp_path)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY does-not-exist /\n")
    run = build(context, "push-branch", images=f"{registry.address}/{repo}", inputs={"retry-attempts": "3"})
    assert run.code == 1
    (error,) = run.errors()
    assert "docker buildx build failed" in error
    assert run.log.count("::group::Build") == 1
    assert run.warnings() == []
    assert registry_api.tags(registry.address, repo) == []


def test_fork_pull_request_builds_without_pushing(registry: RegistryServer, tmp_path: Path) -> None:
    repo = unique("fork")
    run = build(scratch_context(tmp_path), "pull-request-fork", images=f"{registry.address}/{repo}")
    assert run.code == 0, run.log
    assert run.outputs["pushed"] == "false"
    assert run.outputs["digest"] == ""
    assert any("fork" in notice for notice in run.notices())
    assert registry_api.tags(registry.address, repo) == []
    assert Path(run.outputs["artifact-path"]).is_file()
    # Tests later in the same job run the loaded image by its local name.
    assert run.outputs["image"] == f"{registry.address}/{repo}:pr-7-7777777"
    inspect = subprocess.run(["docker", "image", "inspect", run.outputs["image"]], capture_output=True, check=False)
    assert inspect.returncode == 0


def test_engine_unreachable_is_a_clear_error(registry: RegistryServer, tmp_path: Path) -> None:
    run = build(
        scratch_context(tmp_path),
        "push-branch",
        images=f"{registry.address}/{unique('noengine')}",
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"},
    )
    assert run.code == 1
    (error,) = run.errors()
    assert "cannot reach the Docker engine" in error


def test_allow_overwrite_replaces_another_commits_image(registry: RegistryServer, tmp_path: Path) -> None:
    repo = unique("overwrite")
    first, run = build_two_commits_one_tag(registry, repo, tmp_path, {"allow-overwrite": "true"})
    assert run.code == 0, run.log
    assert any("overwriting" in warning for warning in run.warnings())
    assert run.outputs["digest"] != first.outputs["digest"]
    assert_served(registry, repo, ["feature-add-new-feature-abc1234"], run.outputs["digest"])


def test_rerun_with_an_extra_tag_adds_it_to_the_reused_image(registry: RegistryServer, tmp_path: Path) -> None:
    repo = unique("retag")
    context = scratch_context(tmp_path)
    first = build(context, "push-default", images=f"{registry.address}/{repo}")
    assert first.code == 0, first.log
    second = build(context, "push-default", images=f"{registry.address}/{repo}", inputs={"tags": "stable"})
    assert second.code == 0, second.log
    assert second.outputs["reused"] == "true"
    assert_served(registry, repo, ["latest", "sha-0123456", "stable"], first.outputs["digest"])


def test_release_tag_on_a_built_multi_platform_commit_adds_its_tags(registry: RegistryServer, tmp_path: Path) -> None:
    # The release runs on a fresh runner, whose engine pulls only its own platform of the reused image: the
    # new tags must not need the other platform's content.
    repo = unique("retag-multi")
    context = scratch_context(tmp_path)
    both = {"platforms": "linux/amd64,linux/arm64"}
    sha = payload("push-tag-semver")["after"]
    main = payload("push-default")
    main.update(after=sha, head_commit={**main["head_commit"], "id": sha})
    first = build(
        context, "push-default", images=f"{registry.address}/{repo}", inputs=both, data=main, env={"GITHUB_SHA": sha}
    )
    assert first.code == 0, first.log
    local = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", f"{registry.address}/{repo}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    subprocess.run(["docker", "image", "rm", *local], capture_output=True, check=True)
    release = build(context, "push-tag-semver", images=f"{registry.address}/{repo}", inputs=both)
    assert release.code == 0, release.log
    assert release.outputs["reused"] == "true"
    assert_served(registry, repo, ["1", "1.2", "1.2.3", "latest", f"sha-{sha[:7]}"], first.outputs["digest"])
    assert registry_api.platforms(registry.address, repo, "1.2.3") == ["linux/amd64", "linux/arm64"]


def test_reused_image_outputs_its_own_labels(registry: RegistryServer, tmp_path: Path) -> None:
    # A pull request payload carries no commit time, so each plan takes "created" from the clock.
    repo = unique("relabel")
    first = build(scratch_context(tmp_path), "pull-request", images=f"{registry.address}/{repo}")
    assert first.code == 0, first.log
    time.sleep(1.1)
    second = build(scratch_context(tmp_path), "pull-request", images=f"{registry.address}/{repo}")
    assert second.code == 0, second.log
    assert second.outputs["reused"] == "true"
    (config,) = registry_api.configs(registry.address, repo, second.outputs["digest"])
    served = config["config"]["Labels"]
    assert json.loads(second.outputs["json"])["labels"] == served
    assert f"org.opencontainers.image.created={served['org.opencontainers.image.created']}" in second.outputs["labels"]
