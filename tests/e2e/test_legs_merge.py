"""Legs and their merge end to end: one platform per buildonce process, run at the same time, then one index.

Each leg builds a ``FROM scratch`` context for its platform (no QEMU: nothing runs), pushes by digest, and the
merge publishes the index under the tags, checked here with the independent registry reader.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import registry_api
from action_run import Run, run_on_fixture
from build_contexts import scratch_context, unique
from events import payload
from faultproxy import Drop, FaultProxy, Status
from registry_server import RegistryServer

FAST_RETRY = {"retry-wait-seconds": "0.2", "timeout-minutes": "2"}
PLATFORMS = ("linux/amd64", "linux/arm64")
SHA = "0123456789abcdef" * 2 + "01234567"
TAGS = ["latest", "sha-0123456"]


def leg(workdir: Path, images: str, platform: str, inputs: dict[str, str] | None = None, **kwargs: Any) -> Run:
    scratch_context(workdir, f"hello from {platform}")
    all_inputs = {"images": images, "platforms": platform, "distribute": "leg", **FAST_RETRY, **(inputs or {})}
    return run_on_fixture("build", workdir, "push-default", all_inputs, **kwargs)


def legs_at_once(tmp_path: Path, images: str, platforms: tuple[str, ...] = PLATFORMS) -> list[Run]:
    with ThreadPoolExecutor(max_workers=len(platforms)) as pool:
        futures = [pool.submit(leg, tmp_path / platform.replace("/", "-"), images, platform) for platform in platforms]
        runs = [future.result() for future in futures]
    for run in runs:
        assert run.code == 0, run.log
    return runs


def merge(workdir: Path, images: str, legs: list[str], inputs: dict[str, str] | None = None, **kwargs: Any) -> Run:
    workdir.mkdir(parents=True, exist_ok=True)
    all_inputs = {
        "images": images,
        "platforms": ",".join(PLATFORMS),
        "legs": "\n".join(legs),
        **FAST_RETRY,
        **(inputs or {}),
    }
    return run_on_fixture("merge", workdir, "push-default", all_inputs, **kwargs)


def test_two_legs_at_once_then_the_merge(registry: RegistryServer, tmp_path: Path) -> None:
    repo = unique("legs")
    images = f"{registry.address}/{repo}"
    runs = legs_at_once(tmp_path, images)
    # The legs tag nothing: only the merge does.
    assert registry_api.tags(registry.address, repo) == []
    descriptors = [json.loads(run.outputs["leg"]) for run in runs]
    for run, platform, descriptor in zip(runs, PLATFORMS, descriptors, strict=True):
        assert descriptor["platform"] == platform
        assert descriptor["commit"] == SHA
        assert run.outputs["digest"] == descriptor["manifest"]["digest"]
        assert Path(run.outputs["leg-path"]).read_text().strip() == run.outputs["leg"]
        assert run.outputs["leg-name"] == f"buildonce-leg-sha-0123456-{platform.replace('/', '-')}"
        # The leg's manifest is in the registry by digest, of its own architecture.
        manifest = registry_api.manifest(registry.address, repo, descriptor["manifest"]["digest"])
        assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    merged = merge(tmp_path / "merge", images, [run.outputs["leg"] for run in runs])
    assert merged.code == 0, merged.log
    digest = merged.outputs["digest"]
    assert merged.outputs["reused"] == "false"
    index = registry_api.manifest(registry.address, repo, digest)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert registry_api.platforms(registry.address, repo, digest) == list(PLATFORMS)
    platform_digests = json.loads(merged.outputs["platform-digests"])
    assert platform_digests == {d["platform"]: d["manifest"]["digest"] for d in descriptors}
    images_listed = [entry for entry in index["manifests"] if entry["platform"]["os"] != "unknown"]
    assert [entry["digest"] for entry in images_listed] == [platform_digests[p] for p in PLATFORMS]
    # Each attestation right after its subject.
    for position, entry in enumerate(index["manifests"]):
        subject = entry.get("annotations", {}).get("vnd.docker.reference.digest")
        if subject:
            assert index["manifests"][position - 1]["digest"] == subject
    for tag in TAGS:
        assert registry_api.digest_of(registry.address, repo, tag) == digest
    assert sorted(registry_api.tags(registry.address, repo)) == TAGS
    assert index["annotations"]["org.opencontainers.image.revision"] == SHA
    assert "org.opencontainers.image.created" in index["annotations"]
    assert {config["architecture"] for config in registry_api.configs(registry.address, repo, digest)} == {
        "amd64",
        "arm64",
    }
    assert merged.outputs["image"] == f"{images}@{digest}"
    assert merged.outputs["tags"] == "\n".join(f"{images}:{tag}" for tag in TAGS)
    assert json.loads(merged.outputs["json"])["labels"]["org.opencontainers.image.revision"] == SHA
    # This machine's engine pulls the amd64 image of the index.
    pulled = subprocess.run(["docker", "pull", "-q", f"{images}:latest"], capture_output=True, text=True, check=False)
    assert pulled.returncode == 0, pulled.stderr
    inspect = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Architecture}}", f"{images}:latest"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert inspect.stdout.strip() == "amd64"
    # A test job of the arm64 runner takes its platform of the index, checked to be listed by it.
    consumed = run_on_fixture(
        "consume",
        tmp_path / "consume",
        "push-default",
        {"image": images, "platform": "linux/arm64", **FAST_RETRY},
    )
    assert consumed.code == 0, consumed.log
    assert consumed.outputs["digest"] == digest
    assert f"lists {images}@{platform_digests['linux/arm64']} for linux/arm64" in consumed.log
    assert f"Pulled {images}@{digest}" in consumed.log
    missing = run_on_fixture(
        "consume", tmp_path / "consume-386", "push-default", {"image": images, "platform": "linux/386", **FAST_RETRY}
    )
    assert missing.code == 1
    (error,) = missing.errors()
    assert "has no image for linux/386 (input 'platform'); it has: linux/amd64, linux/arm64" in error


@pytest.fixture
def merged_legs(registry: RegistryServer, tmp_path: Path) -> tuple[str, str, list[Run], Run]:
    repo = unique("legs")
    images = f"{registry.address}/{repo}"
    runs = legs_at_once(tmp_path, images)
    merged = merge(tmp_path / "merge", images, [run.outputs["leg"] for run in runs])
    assert merged.code == 0, merged.log
    return repo, images, runs, merged


def test_a_second_merge_reuses_the_index_and_writes_nothing(
    registry: RegistryServer, fault_proxy: FaultProxy, merged_legs: tuple[str, str, list[Run], Run], tmp_path: Path
) -> None:
    repo, _, runs, first = merged_legs
    # Through the proxy, to count what is written; the same registry behind it.
    images = f"{fault_proxy.address}/{repo}"
    legs = [run.outputs["leg"] for run in runs]
    again = merge(tmp_path / "again", images, legs)
    assert again.code == 0, again.log
    assert again.outputs["digest"] == first.outputs["digest"]
    assert again.outputs["reused"] == "true"
    assert fault_proxy.count(method="PUT") == 0
    assert fault_proxy.count(method="POST") == 0
    assert fault_proxy.count(method="PATCH") == 0


def test_a_rerun_leg_pushes_nothing_new(registry: RegistryServer, fault_proxy: FaultProxy, tmp_path: Path) -> None:
    repo = unique("legrerun")
    first = leg(tmp_path / "first", f"{registry.address}/{repo}", "linux/arm64")
    assert first.code == 0, first.log
    again = leg(tmp_path / "again", f"{fault_proxy.address}/{repo}", "linux/arm64")
    assert again.code == 0, again.log
    assert json.loads(again.outputs["leg"])["manifest"] == json.loads(first.outputs["leg"])["manifest"]
    assert fault_proxy.count(method="PUT") == 0
    assert fault_proxy.count(method="POST") == 0
    assert registry_api.tags(registry.address, repo) == []


def test_a_leg_of_a_merged_commit_is_not_built_again(
    merged_legs: tuple[str, str, list[Run], Run], tmp_path: Path
) -> None:
    _, images, runs, _ = merged_legs
    again = leg(tmp_path / "again", images, "linux/arm64")
    assert again.code == 0, again.log
    assert again.outputs["reused"] == "true"
    assert again.outputs["leg"] == runs[1].outputs["leg"]
    assert "docker buildx build" not in again.log


def _other_commit_leg(tmp_path: Path, images: str, platform: str) -> Run:
    other = payload("push-default")
    other["after"] = other["head_commit"]["id"] = "f" * 40
    return leg(tmp_path / "other", images, platform, data=other, env={"GITHUB_SHA": "f" * 40})


@pytest.mark.parametrize("case", ["missing", "extra", "twice", "other-commit", "wrong-arch", "not-json"])
def test_a_wrong_set_of_legs_is_refused_and_nothing_is_tagged(
    registry: RegistryServer, tmp_path: Path, case: str
) -> None:
    repo = unique("legbad")
    images = f"{registry.address}/{repo}"
    runs = legs_at_once(tmp_path, images)
    legs = [run.outputs["leg"] for run in runs]
    fragment = {"missing": "no leg for linux/arm64", "extra": "linux/386, which is not planned", "twice": ""}
    if case == "missing":
        legs = legs[:1]
    elif case == "extra":
        extra = leg(tmp_path / "386", images, "linux/386")
        assert extra.code == 0, extra.log
        legs.append(extra.outputs["leg"])
    elif case == "twice":
        legs.append(legs[0])
        fragment["twice"] = "more than one leg for linux/amd64"
    elif case == "other-commit":
        other = _other_commit_leg(tmp_path, images, "linux/arm64")
        assert other.code == 0, other.log
        legs[1] = other.outputs["leg"]
        fragment[case] = f"built from {'f' * 40}, not from {SHA}"
    elif case == "wrong-arch":
        # A leg whose descriptor claims arm64 for the amd64 image: the config in the registry tells.
        forged = json.loads(legs[0])
        forged["platform"] = "linux/arm64"
        forged["manifest"]["platform"] = {"os": "linux", "architecture": "arm64"}
        legs[1] = json.dumps(forged)
        fragment[case] = "whose config says linux/amd64"
    else:
        legs[0] = legs[0][:-3]
        fragment[case] = "line 1 is not JSON"
    run = merge(tmp_path / "merge", images, legs)
    assert run.code == 1, run.log
    (error,) = run.errors()
    assert fragment[case] in error
    assert "input 'legs'" in error or case == "wrong-arch"
    assert registry_api.tags(registry.address, repo) == []
    assert run.outputs == {}


def test_a_leg_of_another_commit_in_its_descriptor_is_refused(registry: RegistryServer, tmp_path: Path) -> None:
    """The descriptor claims this commit, the image's labels say another: the registry's word wins."""
    repo = unique("legforged")
    images = f"{registry.address}/{repo}"
    runs = legs_at_once(tmp_path, images)
    other = _other_commit_leg(tmp_path, images, "linux/arm64")
    assert other.code == 0, other.log
    forged = json.loads(other.outputs["leg"])
    forged["commit"] = SHA
    forged["immutable-tag"] = "sha-0123456"
    run = merge(tmp_path / "merge", images, [runs[0].outputs["leg"], json.dumps(forged)])
    assert run.code == 1, run.log
    (error,) = run.errors()
    assert f"built from {'f' * 40}" in error
    assert registry_api.tags(registry.address, repo) == []


def test_a_leg_with_several_platforms_is_refused(registry: RegistryServer, tmp_path: Path) -> None:
    repo = unique("legmany")
    run = leg(tmp_path, f"{registry.address}/{repo}", "linux/amd64,linux/arm64")
    assert run.code == 1
    (error,) = run.errors()
    assert "exactly one platform" in error
    assert run.outputs == {}


def test_the_immutable_tag_of_another_commit_refuses_the_merge(registry: RegistryServer, tmp_path: Path) -> None:
    repo = unique("legtaken")
    images = f"{registry.address}/{repo}"
    runs = legs_at_once(tmp_path, images)
    other = payload("push-default")
    other["after"] = other["head_commit"]["id"] = "0123456" + "e" * 33
    single = run_on_fixture(
        "build",
        scratch_context(tmp_path / "single", "another commit"),
        "push-default",
        {"images": images, "platforms": ",".join(PLATFORMS), **FAST_RETRY},
        data=other,
        env={"GITHUB_SHA": other["after"]},
    )
    assert single.code == 0, single.log
    assert registry_api.platforms(registry.address, repo, single.outputs["digest"]) == list(PLATFORMS)
    run = merge(tmp_path / "merge", images, [r.outputs["leg"] for r in runs])
    assert run.code == 1, run.log
    (error,) = run.errors()
    assert "allow-overwrite" in error
    assert other["after"] in error
    assert registry_api.digest_of(registry.address, repo, "sha-0123456") == single.outputs["digest"]
    assert registry_api.digest_of(registry.address, repo, "latest") == single.outputs["digest"]


@pytest.mark.parametrize(
    ("fault", "path"),
    [
        (Status(503), r"/manifests/sha256:"),
        (Drop(), r"/manifests/sha256:"),
        (Status(502), r"/manifests/latest"),
        (Drop(), r"/manifests/sha-0123456"),
    ],
    ids=["index-503", "index-drop", "tag-502", "tag-drop"],
)
def test_faults_on_the_index_and_tag_puts_are_retried(
    registry: RegistryServer, fault_proxy: FaultProxy, tmp_path: Path, fault: Status | Drop, path: str
) -> None:
    repo = unique("legfault")
    runs = legs_at_once(tmp_path, f"{registry.address}/{repo}")
    fault_proxy.add_rule(fault, method="PUT", path=path, times=1)
    images = f"{fault_proxy.address}/{repo}"
    run = merge(tmp_path / "merge", images, [r.outputs["leg"] for r in runs])
    assert run.code == 0, run.log
    digest = run.outputs["digest"]
    assert any("Retrying" in w or "retry" in w.lower() for w in run.warnings()), run.log
    for tag in TAGS:
        assert registry_api.digest_of(registry.address, repo, tag) == digest
    # The faulted PUT was made again, and only that one: one index, under each tag once.
    fired = "drop" if isinstance(fault, Drop) else f"status:{fault.code}"
    assert fault_proxy.count(method="PUT", path=path, outcome=fired) == 1
    assert fault_proxy.count(method="PUT", path=path, outcome=201) == 1
    index_puts = [r.path for r in fault_proxy.requests if r.method == "PUT" and "/manifests/sha256:" in r.path]
    assert {p.rsplit("/", 1)[1] for p in index_puts} == {digest}
    assert sorted(registry_api.tags(registry.address, repo)) == TAGS


def test_a_child_not_yet_visible_is_waited_for(
    registry: RegistryServer, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    repo = unique("legslow")
    runs = legs_at_once(tmp_path, f"{registry.address}/{repo}")
    arm = json.loads(runs[1].outputs["leg"])["manifest"]["digest"]
    # The arm64 manifest answers 404 twice, as a registry behind a cache does right after a push.
    fault_proxy.add_rule(Status(404), path=f"/manifests/{arm}", times=2)
    run = merge(tmp_path / "merge", f"{fault_proxy.address}/{repo}", [r.outputs["leg"] for r in runs])
    assert run.code == 0, run.log
    assert fault_proxy.count(path=f"/manifests/{arm}", outcome="status:404") == 2
    assert registry_api.digest_of(registry.address, repo, "latest") == run.outputs["digest"]


def test_a_child_that_never_appears_fails_the_merge_and_tags_nothing(
    registry: RegistryServer, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    repo = unique("leglost")
    runs = legs_at_once(tmp_path, f"{registry.address}/{repo}")
    arm = json.loads(runs[1].outputs["leg"])["manifest"]["digest"]
    fault_proxy.add_rule(Status(404), path=f"/manifests/{arm}", times=None)
    run = merge(
        tmp_path / "merge",
        f"{fault_proxy.address}/{repo}",
        [r.outputs["leg"] for r in runs],
        inputs={"retry-attempts": "2"},
    )
    assert run.code == 1
    (error,) = run.errors()
    assert "linux/arm64 leg" in error
    assert registry_api.tags(registry.address, repo) == []


def test_a_leg_refuses_an_immutable_tag_of_another_commit_before_building(
    registry: RegistryServer, tmp_path: Path
) -> None:
    repo = unique("legtaken")
    images = f"{registry.address}/{repo}"
    other = payload("push-default")
    other["after"] = other["head_commit"]["id"] = "0123456" + "e" * 33
    single = run_on_fixture(
        "build",
        scratch_context(tmp_path / "single", "another commit"),
        "push-default",
        {"images": images, **FAST_RETRY},
        data=other,
        env={"GITHUB_SHA": other["after"]},
    )
    assert single.code == 0, single.log
    run = leg(tmp_path / "leg", images, "linux/arm64")
    assert run.code == 1
    (error,) = run.errors()
    assert "allow-overwrite" in error
    assert "docker buildx build" not in run.log
    assert run.outputs == {}
