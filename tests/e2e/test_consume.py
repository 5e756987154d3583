"""``buildonce consume`` and ``verify`` end to end: build and push for real, then consume downstream."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from action_run import Run, run_on_fixture
from build_contexts import scratch_context, unique
from events import payload, runner_env
from registry_server import RegistryServer

FAST = {"retry-wait-seconds": "0.1", "retry-attempts": "2", "timeout-minutes": "1"}


def build(workdir: Path, fixture: str, image: str, inputs: dict[str, str] | None = None) -> Run:
    run = run_on_fixture("build", workdir, fixture, {"images": image, **FAST, **(inputs or {})})
    assert run.code == 0, run.log
    return run


def consume(
    workdir: Path, fixture: str, inputs: dict[str, str], data: dict[str, Any] | None = None, command: str = "consume"
) -> Run:
    return run_on_fixture(command, workdir, fixture, {**FAST, **inputs}, data=data)


def local_labels(reference: str) -> dict[str, str]:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", reference],
        capture_output=True,
        text=True,
        check=True,
    )
    labels: dict[str, str] = json.loads(result.stdout)
    return labels


def remove_local(*references: str) -> None:
    subprocess.run(["docker", "image", "rm", "-f", *references], capture_output=True, check=False)


def test_pull_request_image_consumed_from_a_workflow_run(registry: RegistryServer, tmp_path: Path) -> None:
    image = f"{registry.address}/{unique('wr')}"
    built = build(scratch_context(tmp_path / "build"), "pull-request", image)
    remove_local(f"{image}:pr-123-abc1234", built.outputs["image"])
    run = consume(tmp_path / "downstream", "workflow-run-pr", {"image": image})
    assert run.code == 0, run.log
    assert run.outputs["tag"] == built.outputs["immutable-tag"] == "pr-123-abc1234"
    assert run.outputs["digest"] == built.outputs["digest"]
    assert run.outputs["source"] == "registry"
    assert run.outputs["image"] == f"{image}@{built.outputs['digest']}"
    assert local_labels(run.outputs["image"])["dev.buildonce.pr.head-sha"] == "abc1234" + "a" * 33


def test_branch_push_consumed_from_a_workflow_run(registry: RegistryServer, tmp_path: Path) -> None:
    image = f"{registry.address}/{unique('wrb')}"
    data = payload("push-branch")
    data["ref"] = "refs/heads/feature/dns/subdomain"
    data["after"] = "def5678" + "b" * 33
    scratch_context(tmp_path / "build")
    env = {"GITHUB_SHA": data["after"], "GITHUB_REF": data["ref"]}
    built = run_on_fixture("build", tmp_path / "build", "push-branch", {"images": image, **FAST}, env=env, data=data)
    assert built.code == 0, built.log
    assert built.outputs["immutable-tag"] == "feature-dns-subdomain-def5678"
    run = consume(tmp_path / "downstream", "workflow-run-push", {"image": image})
    assert run.code == 0, run.log
    assert (run.outputs["tag"], run.outputs["digest"]) == ("feature-dns-subdomain-def5678", built.outputs["digest"])
    assert run.outputs["source"] == "registry"


def test_consumed_directly_on_the_pull_request_event(registry: RegistryServer, tmp_path: Path) -> None:
    image = f"{registry.address}/{unique('direct')}"
    built = build(scratch_context(tmp_path / "build"), "pull-request", image)
    run = consume(tmp_path / "downstream", "pull-request", {"image": image})
    assert run.code == 0, run.log
    assert run.outputs["digest"] == built.outputs["digest"]


def built_then_registry_gone(tmp_path: Path, name: str) -> tuple[str, Run]:
    """A pull request's image built and pushed to a registry of its own, which is then stopped for good."""
    server = RegistryServer(tmp_path / "registry").start()
    image = f"{server.address}/{unique(name)}"
    try:
        built = build(scratch_context(tmp_path / "build"), "pull-request", image)
    finally:
        server.stop()
    return image, built


def test_registry_down_falls_back_to_the_artifact(tmp_path: Path, engine: None) -> None:
    image, built = built_then_registry_gone(tmp_path, "fallback")
    remove_local(f"{image}:pr-123-abc1234")
    run = consume(
        tmp_path / "downstream", "workflow-run-pr", {"image": image, "artifact-path": built.outputs["artifact-path"]}
    )
    assert run.code == 0, run.log
    assert run.outputs["source"] == "artifact"
    assert run.outputs["tag"] == "pr-123-abc1234"
    assert run.outputs["image"] == f"{image}:pr-123-abc1234"
    assert any("using the artifact" in warning for warning in run.warnings())
    assert local_labels(run.outputs["image"])["org.opencontainers.image.revision"] == "5" * 40


def test_stale_tag_fails_freshness_naming_both_shas(registry: RegistryServer, tmp_path: Path) -> None:
    image = f"{registry.address}/{unique('stale')}"
    build(scratch_context(tmp_path / "build"), "pull-request", image)
    later = payload("workflow-run-pr")
    # The same 7-character prefix, another commit: the tag a consumer computes points at the wrong image.
    later["workflow_run"]["head_sha"] = "abc1234" + "e" * 33
    later["workflow_run"]["pull_requests"][1]["head"]["sha"] = "abc1234" + "e" * 33
    run = consume(tmp_path / "downstream", "workflow-run-pr", {"image": image}, data=later)
    assert run.code == 1
    (error,) = run.errors()
    assert "abc1234" + "a" * 33 in error
    assert "abc1234" + "e" * 33 in error
    assert run.outputs == {}


def test_a_stale_digest_pulled_beside_its_check_fails_and_is_never_tagged_or_reported(
    registry: RegistryServer, tmp_path: Path
) -> None:
    image = f"{registry.address}/{unique('staledigest')}"
    built = build(scratch_context(tmp_path / "build"), "pull-request", image)
    digest = built.outputs["digest"]
    remove_local(f"{image}:pr-123-abc1234", f"{image}@{digest}")
    other = "abc1234" + "e" * 33
    run = consume(tmp_path / "downstream", "pull-request", {"image": image, "digest": digest, "sha": other})
    assert run.code == 1
    (error,) = run.errors()
    assert other in error
    assert "abc1234" + "a" * 33 in error
    assert run.outputs == {}
    # The engine may hold the digest the caller named (its pull ran beside the check), under no tag.
    tagged = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Tag}}", image], capture_output=True, text=True, check=True
    )
    assert [tag for tag in tagged.stdout.split() if tag != "<none>"] == []
    # And the same digest, for its own commit, is consumed from the same engine.
    again = consume(tmp_path / "again", "pull-request", {"image": image, "digest": digest, "sha": "abc1234" + "a" * 33})
    assert again.code == 0, again.log
    assert again.outputs["image"] == f"{image}@{digest}"


@pytest.mark.parametrize("damage", ["truncate", "checksum"])
def test_damaged_artifact_is_a_clear_error(tmp_path: Path, engine: None, damage: str) -> None:
    image, built = built_then_registry_gone(tmp_path, "damaged")
    artifact = Path(built.outputs["artifact-path"])
    if damage == "truncate":
        artifact.write_bytes(artifact.read_bytes()[: artifact.stat().st_size // 2])
    else:
        (artifact.parent / (artifact.name + ".sha256")).write_text(f"{'0' * 64}  {artifact.name}\n")
    run = consume(tmp_path / "downstream", "workflow-run-pr", {"image": image, "artifact-path": str(artifact)})
    assert run.code == 1
    (error,) = run.errors()
    assert "corrupted" in error
    assert str(artifact) in error


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_compressed_artifact_round_trip(tmp_path: Path, engine: None, compression: str) -> None:
    server = RegistryServer(tmp_path / "registry").start()
    image = f"{server.address}/{unique('zip')}"
    try:
        built = build(
            scratch_context(tmp_path / "build", f"payload {compression}"),
            "pull-request",
            image,
            {"artifact-compression": compression},
        )
    finally:
        server.stop()
    artifact = Path(built.outputs["artifact-path"])
    suffix = {"none": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}[compression]
    assert artifact.name.endswith(suffix)
    if compression == "gzip":
        assert gzip.decompress(artifact.read_bytes())[:100]
    remove_local(f"{image}:pr-123-abc1234")
    run = consume(tmp_path / "downstream", "workflow-run-pr", {"image": image, "artifact-path": str(artifact)})
    assert run.code == 0, run.log
    assert run.outputs["source"] == "artifact"
    if compression == "gzip":
        # docker load takes gzip as it is, too.
        remove_local(f"{image}:pr-123-abc1234")
        loaded = subprocess.run(["docker", "load", "-i", str(artifact)], capture_output=True, text=True, check=False)
        assert loaded.returncode == 0, loaded.stderr


def test_verify_checks_without_pulling(registry: RegistryServer, tmp_path: Path) -> None:
    image = f"{registry.address}/{unique('verify')}"
    built = build(scratch_context(tmp_path / "build"), "push-default", image)
    sha = runner_env("push-default")["GITHUB_SHA"]
    ok = consume(tmp_path / "v1", "push-default", {"image": built.outputs["image"], "sha": sha}, command="verify")
    assert ok.code == 0, ok.log
    assert ok.outputs["digest"] == built.outputs["digest"]
    bad = consume(tmp_path / "v2", "push-default", {"image": f"{image}:latest", "sha": "f" * 40}, command="verify")
    assert bad.code == 1
    assert sha in bad.errors()[0]
    assert "f" * 40 in bad.errors()[0]
    # Without 'sha', the commit the event names is the one checked.
    same = consume(tmp_path / "v3", "push-default", {"image": f"{image}:latest"}, command="verify")
    assert same.code == 0, same.log
    assert f"was built from {sha}" in same.log
    other = consume(tmp_path / "v4", "push-branch", {"image": f"{image}:latest"}, command="verify")
    assert other.code == 1
    (error,) = other.errors()
    assert sha in error
    assert runner_env("push-branch")["GITHUB_SHA"] in error


def test_fork_pull_request_is_consumed_from_its_artifact(registry: RegistryServer, tmp_path: Path) -> None:
    image = f"{registry.address}/{unique('fork')}"
    built = build(scratch_context(tmp_path / "build"), "pull-request-fork", image)
    assert built.outputs["pushed"] == "false"
    remove_local(f"{image}:pr-7-7777777")
    # GitHub leaves workflow_run.pull_requests empty for a fork: no PR number, so no tag to compute.
    run = consume(
        tmp_path / "downstream",
        "workflow-run-fork-pr",
        {"image": image, "artifact-path": built.outputs["artifact-path"]},
    )
    assert run.code == 0, run.log
    assert run.outputs["source"] == "artifact"
    assert run.outputs["image"] == f"{image}:pr-7-7777777"
    assert local_labels(run.outputs["image"])["dev.buildonce.pr.head-sha"] == "7" * 40
    # A later step's verify of the loaded image takes the commit from the same event.
    checked = consume(tmp_path / "verify", "workflow-run-fork-pr", {"image": run.outputs["image"]}, command="verify")
    assert checked.code == 0, checked.log
    assert checked.outputs["source"] == "local"
    assert f"was built from {'7' * 40}" in checked.log


def test_defer_artifact_reports_the_need_instead_of_failing(tmp_path: Path, engine: None) -> None:
    image, built = built_then_registry_gone(tmp_path, "defer")
    deferred = consume(tmp_path / "downstream", "workflow-run-pr", {"image": image, "defer-artifact": "true"})
    assert deferred.code == 0, deferred.log
    assert deferred.outputs["need-artifact"] == "true"
    assert deferred.outputs["digest"] == ""
    remove_local(f"{image}:pr-123-abc1234")
    loaded = consume(
        tmp_path / "again",
        "workflow-run-pr",
        {"image": image, "source": "artifact", "artifact-path": built.outputs["artifact-path"]},
    )
    assert loaded.code == 0, loaded.log
    assert (loaded.outputs["source"], loaded.outputs["need-artifact"]) == ("artifact", "false")
    assert "registry" not in " ".join(loaded.warnings())


def test_defer_artifact_still_fails_a_stale_image(registry: RegistryServer, tmp_path: Path) -> None:
    image = f"{registry.address}/{unique('stale-defer')}"
    build(scratch_context(tmp_path / "build"), "pull-request", image)
    later = payload("workflow-run-pr")
    later["workflow_run"]["head_sha"] = "abc1234" + "e" * 33
    later["workflow_run"]["pull_requests"][1]["head"]["sha"] = "abc1234" + "e" * 33
    run = consume(tmp_path / "downstream", "workflow-run-pr", {"image": image, "defer-artifact": "true"}, data=later)
    assert run.code == 1
    assert run.outputs == {}


def test_source_registry_never_touches_the_artifact(tmp_path: Path, engine: None) -> None:
    image, built = built_then_registry_gone(tmp_path, "only-registry")
    run = consume(
        tmp_path / "downstream",
        "workflow-run-pr",
        {"image": image, "source": "registry", "artifact-path": built.outputs["artifact-path"]},
    )
    assert run.code == 1
    (error,) = run.errors()
    assert "::error title=Registry::" in run.log
    assert "artifact" not in error


def test_verify_falls_back_to_the_local_engine(registry: RegistryServer, tmp_path: Path) -> None:
    image = f"{registry.address}/{unique('verify-local')}"
    built = build(scratch_context(tmp_path / "build"), "pull-request", image, {"push": "false"})
    reference = f"{image}:pr-123-abc1234"
    head = "abc1234" + "a" * 33
    ok = consume(tmp_path / "v", "pull-request", {"image": reference, "sha": head}, command="verify")
    assert ok.code == 0, ok.log
    assert ok.outputs["source"] == "local"
    assert built.outputs["pushed"] == "false"
    missing = consume(tmp_path / "m", "pull-request", {"image": f"{image}:nope", "sha": head}, command="verify")
    assert missing.code == 1
    assert "neither in the registry nor in the local engine" in missing.errors()[0]


# --- the artifact holds what consume hands out, and a pinned digest is that digest ------------------------

HEAD = "abc1234" + "a" * 33
"""The workflow-run-pr fixture's head commit, which the pull-request fixture builds."""
OTHER_HEAD = "abc1234" + "e" * 33
"""Another commit with the same 7-character prefix: the same planned tag, pr-123-abc1234."""


def pull_request_build(workdir: Path, image: str, head: str, text: str, inputs: dict[str, str] | None = None) -> Run:
    data = payload("pull-request")
    data["pull_request"]["head"]["sha"] = head
    scratch_context(workdir, text)
    run = run_on_fixture("build", workdir, "pull-request", {"images": image, **FAST, **(inputs or {})}, data=data)
    assert run.code == 0, run.log
    return run


def two_builds_then_registry_gone(tmp_path: Path, name: str) -> tuple[str, Run, Run]:
    """Commit HEAD's pull request and a branch push of another commit, both pushed (with their artifacts) to
    one repository of a registry that is then stopped for good."""
    server = RegistryServer(tmp_path / "registry").start()
    image = f"{server.address}/{unique(name)}"
    try:
        first = build(scratch_context(tmp_path / "a", "first"), "pull-request", image)
        second = build(scratch_context(tmp_path / "b", "second"), "push-branch", image)
    finally:
        server.stop()
    assert first.outputs["digest"] != second.outputs["digest"]
    return image, first, second


def local_id(reference: str) -> str:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", reference], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


@pytest.mark.parametrize("source", ["auto", "artifact"])
def test_a_pinned_digest_is_never_served_by_another_builds_artifact(tmp_path: Path, engine: None, source: str) -> None:
    image, first, second = two_builds_then_registry_gone(tmp_path, f"pin-wrong-{source}")
    pinned = first.outputs["digest"]
    run = consume(
        tmp_path / "downstream",
        "push-default",
        {"image": image, "digest": pinned, "source": source, "artifact-path": second.outputs["artifact-path"]},
    )
    assert run.code == 1, run.log
    (error,) = run.errors()
    assert f"does not hold {image}@{pinned}" in error
    assert second.outputs["digest"] in error
    assert run.outputs == {}


def test_a_pinned_digest_missing_from_a_live_registry_is_not_taken_from_another_artifact(
    registry: RegistryServer, tmp_path: Path
) -> None:
    image = f"{registry.address}/{unique('pin-absent')}"
    other = build(scratch_context(tmp_path / "build"), "push-branch", image)
    pinned = "sha256:" + "5a" * 32
    inputs = {"image": image, "digest": pinned, "artifact-path": other.outputs["artifact-path"]}
    run = consume(tmp_path / "downstream", "push-default", inputs)
    assert run.code == 1, run.log
    assert any("using the artifact" in warning for warning in run.warnings())
    (error,) = run.errors()
    assert f"carries no manifest that hashes to {pinned}" in error
    assert other.outputs["digest"] in error


@pytest.mark.parametrize("source", ["auto", "artifact"])
def test_a_pinned_digest_is_served_by_its_own_builds_artifact(tmp_path: Path, engine: None, source: str) -> None:
    image, first, _ = two_builds_then_registry_gone(tmp_path, f"pin-right-{source}")
    pinned = first.outputs["digest"]
    remove_local(f"{image}:pr-123-abc1234")
    run = consume(
        tmp_path / "downstream",
        "push-default",
        {
            "image": image,
            "digest": pinned,
            "sha": HEAD,
            "source": source,
            "artifact-path": first.outputs["artifact-path"],
        },
    )
    assert run.code == 0, run.log
    assert (run.outputs["source"], run.outputs["digest"]) == ("artifact", pinned)
    assert run.outputs["image"] == f"{image}:pr-123-abc1234"
    assert local_id(run.outputs["image"]) == pinned
    assert local_labels(run.outputs["image"])["dev.buildonce.pr.head-sha"] == HEAD


def test_the_artifacts_image_replaces_another_commits_image_the_engine_held(tmp_path: Path, engine: None) -> None:
    image, built = built_then_registry_gone(tmp_path, "engine-stale")
    tag = f"{image}:pr-123-abc1234"
    # The engine now holds another commit's image under the very tag the artifact's image has.
    pull_request_build(tmp_path / "other", image, OTHER_HEAD, "other commit", {"push": "false", "artifact": "false"})
    assert local_labels(tag)["dev.buildonce.pr.head-sha"] == OTHER_HEAD
    run = consume(
        tmp_path / "downstream",
        "workflow-run-pr",
        {"image": image, "source": "artifact", "artifact-path": built.outputs["artifact-path"]},
    )
    assert run.code == 0, run.log
    assert run.outputs["digest"] == built.outputs["digest"] == local_id(tag)
    assert local_labels(tag)["dev.buildonce.pr.head-sha"] == HEAD


@pytest.mark.parametrize("tar_tag", ["same", "other"])
def test_an_artifact_of_another_commit_is_stale_whatever_the_engine_holds(
    tmp_path: Path, engine: None, tar_tag: str
) -> None:
    image = f"127.0.0.1:5999/{unique('tar-stale')}"
    if tar_tag == "same":
        # The tar holds the planned tag, for another commit.
        stale = pull_request_build(tmp_path / "stale", image, OTHER_HEAD, "stale", {"push": "false"})
        named = OTHER_HEAD
    else:
        # The tar holds another tag of the repository: not the planned one, and another commit.
        stale = build(scratch_context(tmp_path / "stale", "branch"), "push-branch", image, {"push": "false"})
        named = runner_env("push-branch")["GITHUB_SHA"]
    # The engine holds the right commit's image under the planned tag.
    pull_request_build(tmp_path / "right", image, HEAD, "right", {"push": "false", "artifact": "false"})
    tag = f"{image}:pr-123-abc1234"
    right = local_id(tag)
    run = consume(
        tmp_path / "downstream",
        "workflow-run-pr",
        {"image": image, "source": "artifact", "artifact-path": stale.outputs["artifact-path"]},
    )
    assert run.code == 1, run.log
    (error,) = run.errors()
    assert named in error
    assert HEAD in error
    assert run.outputs == {}
    # Refused before loading: the engine's image is untouched.
    assert local_id(tag) == right


def rewrite_tar(path: Path, change: Callable[[dict[str, bytes]], dict[str, bytes]]) -> None:
    """Rewrite an uncompressed artifact's members and its .sha256, as someone who tampers with it would."""
    with tarfile.open(path) as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive if m.isreg()}  # type: ignore[union-attr]
    changed = change(members)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in changed.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    path.write_bytes(data)
    (path.parent / (path.name + ".sha256")).write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")


def test_a_tampered_tar_with_a_matching_checksum_is_refused_by_the_pin(tmp_path: Path, engine: None) -> None:
    image, built = built_then_registry_gone(tmp_path, "tampered")
    pinned = built.outputs["digest"]

    def relabel(members: dict[str, bytes]) -> dict[str, bytes]:
        # Another config (one label changed) under its own digest, named by manifest.json; the pinned
        # manifest's bytes stay in the tar, and the OCI index that named them goes.
        (entry,) = json.loads(members["manifest.json"])
        config = json.loads(members[entry["Config"]])
        config["config"]["Labels"]["org.opencontainers.image.description"] = "not what was built"
        raw = json.dumps(config).encode()
        entry["Config"] = "blobs/sha256/" + hashlib.sha256(raw).hexdigest()
        kept = {name: data for name, data in members.items() if name not in ("index.json", "oci-layout")}
        return {**kept, entry["Config"]: raw, "manifest.json": json.dumps([entry]).encode()}

    artifact = Path(built.outputs["artifact-path"])
    rewrite_tar(artifact, relabel)
    run = consume(
        tmp_path / "downstream",
        "push-default",
        {"image": image, "digest": pinned, "source": "artifact", "artifact-path": str(artifact)},
    )
    assert run.code == 1, run.log
    (error,) = run.errors()
    assert f"does not hold {image}@{pinned}" in error
    assert "config" in error


@pytest.mark.parametrize("pin", [False, True])
def test_a_tar_without_an_oci_index_is_checked_by_the_engines_view_of_it(
    tmp_path: Path, engine: None, pin: bool
) -> None:
    image, built = built_then_registry_gone(tmp_path, "no-index")
    artifact = Path(built.outputs["artifact-path"])
    # As Docker before 25 saved: manifest.json alone. The containerd store then makes a manifest of its
    # own, so the loaded image's id cannot be known in advance; its config must match instead.
    rewrite_tar(artifact, lambda members: {k: v for k, v in members.items() if k not in ("index.json", "oci-layout")})
    tag = f"{image}:pr-123-abc1234"
    pull_request_build(tmp_path / "other", image, OTHER_HEAD, "other commit", {"push": "false", "artifact": "false"})
    inputs = {"image": image, "source": "artifact", "artifact-path": str(artifact)}
    if pin:
        inputs["digest"] = built.outputs["digest"]
    run = consume(tmp_path / "downstream", "workflow-run-pr", inputs)
    assert run.code == 0, run.log
    assert local_id(tag) not in (built.outputs["digest"], "")
    assert run.outputs["digest"] == (built.outputs["digest"] if pin else local_id(tag))
    assert local_labels(tag)["dev.buildonce.pr.head-sha"] == HEAD
