"""``buildonce prune`` end to end: images built here by ``buildonce build`` (multi-platform ones from scratch
contexts, no emulation needed), signatures and referrers pushed beside them, a real Distribution registry with
deletes enabled, and the engine pulling what is kept."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import oci_push
import pytest
import registry_api
import yaml
from action_run import runner_setup
from build_contexts import scratch_context, unique
from events import payload
from faultproxy import FaultProxy, Status
from prune_images import DAY, HOUR, build_pr, build_push, planned, prune, with_action
from registry_server import SESSION_ADDRESSES, RegistryServer


@pytest.fixture(scope="module")
def prune_registry(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry of its own: the test stops it for the garbage collection."""
    with RegistryServer(tmp_path_factory.mktemp("prune-registry")) as server:
        yield server


def below(address: str, repository: str, digest: str) -> set[str]:
    """Every manifest an index lists (images and BuildKit's attestation manifests)."""
    return {m["digest"] for m in registry_api.manifest(address, repository, digest).get("manifests", [])}


def clean_and_pull(references: list[str]) -> None:
    """Forget the local images of these names, then pull each from the registry."""
    subprocess.run(["docker", "image", "rm", "-f", *references], capture_output=True, check=False)
    for reference in references:
        result = subprocess.run(["docker", "pull", "-q", reference], capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{reference}: {result.stderr}"


def every_blob_answers(address: str, repository: str, reference: str) -> None:
    top = registry_api.manifest(address, repository, reference)
    manifests = [top, *(registry_api.manifest(address, repository, m["digest"]) for m in top.get("manifests", []))]
    for body in manifests:
        for blob in [body.get("config"), *body.get("layers", [])]:
            if blob:
                status = registry_api.blob_status(address, repository, blob["digest"])
                assert status == 200, f"{reference}: blob {blob['digest']} -> {status}"


@dataclass
class Scenario:
    repository: str
    image: str
    expect_deleted: set[str] = field(default_factory=set)
    expect_untagged: set[str] = field(default_factory=set)
    kept_tags: set[str] = field(default_factory=set)
    shared_child: str = ""


def test_prune_plans_then_removes_exactly_the_transient_images(prune_registry: RegistryServer, tmp_path: Path) -> None:
    address = prune_registry.address
    repository = unique("prune")
    image = f"{address}/{repository}"
    s = Scenario(repository, image)

    # pr-1: an old multi-platform index (deleted, with both children) and a newer image (kept: keep-newest 1)
    # with a cosign signature (kept with it).
    old = build_pr(tmp_path / "pr1-old", image, 1, "a1" * 20, 3 * DAY, "linux/amd64,linux/arm64")
    old_digest = old.outputs["digest"]
    s.expect_deleted |= {old_digest, *below(address, repository, old_digest)}
    newer = build_pr(tmp_path / "pr1-new", image, 1, "b1" * 20, 30 * HOUR)
    kept_sig = oci_push.cosign_signature(address, repository, newer.outputs["digest"], b"pr-1 newer")
    s.kept_tags |= {"pr-1-b1b1b1b", f"sha256-{newer.outputs['digest'].removeprefix('sha256:')}.sig"}
    # Build-key lookup tags follow their image: the old one goes with it, the newer one stays with its image.
    oci_push.retag(address, repository, old_digest, "buildkey-" + "1" * 64)
    oci_push.retag(address, repository, newer.outputs["digest"], "buildkey-" + "2" * 64)
    s.kept_tags.add("buildkey-" + "2" * 64)

    # pr-2, closed: deleted with its .sig and its subject referrer (and the referrers fallback tag).
    closed = build_pr(tmp_path / "pr2", image, 2, "c2" * 20, 5 * HOUR)
    closed_digest = closed.outputs["digest"]
    sig = oci_push.cosign_signature(address, repository, closed_digest, b"pr-2")
    referrer = oci_push.subject_referrer(
        address, repository, oci_push.descriptor_of(address, repository, closed_digest), b'{"sbom": "pr-2"}'
    )
    fallback = registry_api.digest_of(address, repository, f"sha256-{closed_digest.removeprefix('sha256:')}")
    s.expect_deleted |= {closed_digest, *below(address, repository, closed_digest)}
    s.expect_deleted |= {sig["digest"], referrer["digest"], str(fallback)}

    # pr-3, closed but younger than min-age: kept.
    build_pr(tmp_path / "pr3", image, 3, "d3" * 20, 30 * 60)
    s.kept_tags.add("pr-3-d3d3d3d")

    # Branch images: one past branch-max-age (deleted), the newest of the branch (kept).
    stale = build_push(tmp_path / "b-old", image, "feature/x", "e5" * 20, 10 * DAY)
    build_push(tmp_path / "b-new", image, "feature/x", "f6" * 20, 1 * DAY)
    s.expect_deleted |= {stale.outputs["digest"], *below(address, repository, stale.outputs["digest"])}
    s.kept_tags.add("feature-x-f6f6f6f")

    # The default branch, for two platforms: protected.
    main = build_push(tmp_path / "main", image, "main", "0a" * 20, 20 * DAY, "linux/amd64,linux/arm64")
    main_children = registry_api.manifest(address, repository, main.outputs["digest"])["manifests"]
    s.kept_tags |= {"latest", "sha-0a0a0a0"}

    # pr-4, closed: an index of its own image and the default branch's arm64 image. The shared child stays.
    own = build_pr(tmp_path / "pr4", image, 4, "a4" * 20, 3 * DAY)
    own_index = registry_api.manifest(address, repository, own.outputs["digest"])
    own_image = next(m for m in own_index["manifests"] if m["platform"]["os"] != "unknown")
    shared = next(m for m in main_children if m["platform"]["architecture"] == "arm64")
    mixed = oci_push.index_of(address, repository, "pr-4-a4a4a4a", [own_image, shared])
    s.expect_deleted |= {mixed["digest"], own_image["digest"]}
    s.shared_child = shared["digest"]

    # pr-5, closed, but its digest is also tagged keep-me (not a transient tag): only pr-5's tag goes.
    both = build_pr(tmp_path / "pr5", image, 5, "b5" * 20, 3 * DAY)
    oci_push.retag(address, repository, both.outputs["digest"], "keep-me")
    s.expect_untagged.add(f"{image}:pr-5-b5b5b5b")
    s.kept_tags.add("keep-me")

    # An image buildonce did not push, under a tag of the same shape: never touched.
    lookalike = scratch_context(tmp_path / "lookalike", "not pushed by buildonce")
    pushed = subprocess.run(
        ["docker", "buildx", "build", "--push", "-t", f"{image}:pr-6-1234567", str(lookalike)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert pushed.returncode == 0, pushed.stderr
    s.kept_tags.add("pr-6-1234567")
    tags_before = set(registry_api.tags(address, repository))

    rules = {"closed-prs": "2,3,4,5"}
    dry = prune(tmp_path / "dry", image, **rules)
    assert dry.code == 0, dry.log
    assert dry.outputs["applied"] == "false"
    assert with_action(dry, "delete") == s.expect_deleted, json.dumps(list(planned(dry).values()), indent=1)
    assert {f"{image}:{tag}" for e in planned(dry).values() for tag in e.get("untag", [])} == s.expect_untagged
    assert set(registry_api.tags(address, repository)) == tags_before  # a dry run deletes nothing
    assert int(dry.outputs["remaining"]) == len(s.expect_deleted) + len(s.expect_untagged)
    assert "pr-6-1234567" in dry.outputs["skipped"]
    assert "Would remove" in dry.summary
    assert s.shared_child not in with_action(dry, "delete")

    applied = prune(tmp_path / "apply", image, apply="true", **rules)
    assert applied.code == 0, applied.log
    assert {line.split("@", 1)[1] for line in applied.outputs["deleted"].splitlines()} == s.expect_deleted
    assert set(applied.outputs["untagged"].splitlines()) == s.expect_untagged
    assert applied.outputs["remaining"] == "0"
    assert set(registry_api.tags(address, repository)) == s.kept_tags
    for gone in s.expect_deleted:
        assert registry_api.digest_of(address, repository, gone) is None, gone
    assert registry_api.digest_of(address, repository, s.shared_child) == s.shared_child
    assert registry_api.digest_of(address, repository, kept_sig["digest"]) == kept_sig["digest"]

    again = prune(tmp_path / "again", image, apply="true", **rules)
    assert again.code == 0, again.log
    assert with_action(again, "delete") == set()
    assert with_action(again, "untag") == set()
    assert again.outputs["deleted"] == ""

    freed = prune_registry.garbage_collect()
    # What prune said only the removed images use is what the garbage collection frees, give or take the
    # registry's own bookkeeping files.
    assert int(dry.outputs["reclaimable-bytes"]) // 2 <= freed <= 2 * int(dry.outputs["reclaimable-bytes"])
    print(f"garbage collection freed {freed} bytes; prune reported {dry.outputs['reclaimable-bytes']}")
    pulled = sorted(f"{image}:{tag}" for tag in s.kept_tags if not tag.startswith("sha256-"))
    clean_and_pull(pulled)
    for tag in s.kept_tags:
        every_blob_answers(address, repository, tag)


# --- faults ---------------------------------------------------------------------------------------------------


@pytest.fixture
def proxy(prune_registry: RegistryServer) -> Iterator[FaultProxy]:
    with FaultProxy(prune_registry.address) as server:
        SESSION_ADDRESSES.add(server.address)
        yield server


def _two_images(tmp_path: Path, proxy: FaultProxy) -> tuple[str, str, str]:
    """An old closed pull request's index and a kept default-branch image, through the proxy."""
    repository = unique("prune-fault")
    image = f"{proxy.address}/{repository}"
    old = build_pr(tmp_path / "old", image, 9, "9a" * 20, 3 * DAY, "linux/amd64,linux/arm64")
    build_push(tmp_path / "main", image, "main", "0b" * 20, 9 * DAY)
    return repository, image, old.outputs["digest"]


def test_an_unreadable_manifest_fails_closed(proxy: FaultProxy, tmp_path: Path) -> None:
    repository, image, old = _two_images(tmp_path, proxy)
    child = registry_api.manifest(proxy.address, repository, old)["manifests"][0]["digest"]
    proxy.add_rule(Status(500), method="GET", path=f"/manifests/{child}", times=None)
    run = prune(tmp_path / "run", image, apply="true", **{"closed-prs": "9", "retry-attempts": "2"})
    assert run.code == 1
    assert proxy.count(method="DELETE") == 0
    assert registry_api.digest_of(proxy.address, repository, old) == old
    (error,) = run.errors()
    assert "nothing in" in error
    assert "could not be read" in error


def test_deletes_are_retried_on_5xx_and_429(proxy: FaultProxy, tmp_path: Path) -> None:
    repository, image, old = _two_images(tmp_path, proxy)
    proxy.add_rule(Status(503), method="DELETE", path=f"/manifests/{old}", times=1)
    proxy.add_rule(Status(429, {"Retry-After": "0"}), method="DELETE", times=1)
    run = prune(tmp_path / "run", image, apply="true", **{"closed-prs": "9"})
    assert run.code == 0, run.log
    assert proxy.count(method="DELETE", outcome="status:503") == 1
    assert proxy.count(method="DELETE", outcome="status:429") == 1
    assert registry_api.digest_of(proxy.address, repository, old) is None
    assert len(run.outputs["deleted"].splitlines()) == 5  # the index, two images, two attestations
    assert sorted(registry_api.tags(proxy.address, repository)) == ["latest", "sha-0b0b0b0"]


def test_a_child_gone_behind_prunes_back_fails_the_verification(proxy: FaultProxy, tmp_path: Path) -> None:
    repository, image, _ = _two_images(tmp_path, proxy)
    main = registry_api.digest_of(proxy.address, repository, "latest")
    assert main is not None
    # The registry loses the kept image's manifest once prune has read it: its check after the sweep asks
    # by HEAD, and gets the 404 a registry gives for a manifest deleted by someone else.
    proxy.add_rule(Status(404), method="HEAD", path=f"/manifests/{main}", times=None)
    run = prune(tmp_path / "run", image, apply="true", **{"closed-prs": "9"})
    assert run.code == 1
    (error,) = run.errors()
    assert "after the sweep" in error
    assert main in error


def test_max_deletes_stops_between_images_and_the_next_run_continues(proxy: FaultProxy, tmp_path: Path) -> None:
    repository, image, old = _two_images(tmp_path, proxy)
    second = build_pr(tmp_path / "second", image, 9, "9c" * 20, 2 * DAY)
    # Two groups: the old index with its four children (5), the second image with its attestation (3).
    first = prune(tmp_path / "first", image, apply="true", **{"closed-prs": "9", "max-deletes": "5"})
    assert first.code == 0, first.log
    done = len(first.outputs["deleted"].splitlines())
    assert done in {3, 5}
    assert first.outputs["remaining"] == str(8 - done)
    assert "max-deletes" in " ".join(first.notices())
    rest = prune(tmp_path / "rest", image, apply="true", **{"closed-prs": "9", "max-deletes": "5"})
    assert rest.code == 0, rest.log
    assert rest.outputs["remaining"] == "0"
    for digest in (old, second.outputs["digest"]):
        assert registry_api.digest_of(proxy.address, repository, digest) is None
    assert sorted(registry_api.tags(proxy.address, repository)) == ["latest", "sha-0b0b0b0"]


def test_the_action_step_runs_prune_as_the_runner_does_without_docker(
    prune_registry: RegistryServer, tmp_path: Path
) -> None:
    """prune/action.yml's step, its env as the runner fills it from the defaults, on a PATH with no docker."""
    root = Path(__file__).resolve().parents[2]
    action = yaml.safe_load((root / "prune" / "action.yml").read_text())
    step = next(step for step in action["runs"]["steps"] if step.get("id") == "prune")
    repository = unique("prune-step")
    old = build_pr(tmp_path / "old", f"{prune_registry.address}/{repository}", 3, "3a" * 20, 3 * DAY)
    inputs = {name: spec["default"] for name, spec in action["inputs"].items()}
    inputs |= {"images": f"{prune_registry.address}/{repository}", "closed-prs": "3", "apply": "true"}
    env = {
        key: re.sub(r"\$\{\{ inputs\.([a-z-]+) \}\}", lambda found: inputs[found[1]], str(value))
        for key, value in step["env"].items()
    }
    env["BUILDONCE_PYTHON"] = sys.executable
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "bash").symlink_to(shutil.which("bash") or "/bin/bash")
    setup = runner_setup(
        tmp_path / "step", event_name="schedule", payload=payload("schedule"), env={**env, "PATH": str(bare)}, inputs={}
    )
    script = root / "action" / "prune.sh"
    result = subprocess.run(
        [str(bare / "bash"), str(script)], env=setup.env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = setup.outputs()
    assert outputs["applied"] == "true"
    assert f"{repository}@{old.outputs['digest']}" in outputs["deleted"]
    assert registry_api.tags(prune_registry.address, repository) == []
    assert set(outputs) == set(action["outputs"])
