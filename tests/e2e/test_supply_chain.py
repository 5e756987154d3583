"""Signing and verifying end to end: the real engine, buildx, a Distribution registry on loopback and Debian's
cosign, with a key pair generated for the session (no transparency log: nothing leaves the machine)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cosign_standin
import pytest
import registry_api
from action_run import Run, run_on_fixture
from build_contexts import scratch_context, unique
from events import runner_env
from faultproxy import FaultProxy, Status
from registry_server import TEST_PASSWORD, TEST_USER, RegistryServer
from sbom_scanner import scanner_image

FAST = {"retry-wait-seconds": "0.1", "retry-attempts": "3", "timeout-minutes": "2"}
PASSWORD = "correct horse battery staple"
SHA = runner_env("push-default")["GITHUB_SHA"]


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path


def _generate(directory: Path, password: str) -> KeyPair:
    directory.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "COSIGN_PASSWORD": password}
    result = subprocess.run(
        ["cosign", "generate-key-pair"], cwd=directory, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return KeyPair(directory / "cosign.key", directory / "cosign.pub")


@pytest.fixture(scope="session")
def cosign(engine: None) -> str:
    binary = shutil.which("cosign")
    if binary is None:
        pytest.fail("cosign is not on PATH; scripts/dev-env up installs it")
    return binary


@pytest.fixture(scope="session")
def keys(cosign: str, tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return _generate(tmp_path_factory.mktemp("keys"), PASSWORD)


@pytest.fixture(scope="session")
def other_keys(cosign: str, tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return _generate(tmp_path_factory.mktemp("other-keys"), "another password")


def signing_inputs(keys: KeyPair) -> dict[str, str]:
    return {"sign": "true", "sign-key": str(keys.private), "sign-tlog": "false"}


def build(
    workdir: Path,
    image: str,
    keys: KeyPair | None,
    inputs: dict[str, str] | None = None,
    *,
    password: str = PASSWORD,
    fixture: str = "push-default",
) -> Run:
    extra = signing_inputs(keys) if keys else {}
    return run_on_fixture(
        "build",
        workdir,
        fixture,
        {"images": image, **FAST, **extra, **(inputs or {})},
        env={"COSIGN_PASSWORD": password},
    )


def cosign_verify(reference: str, public: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["cosign", "verify", "--key", str(public), "--insecure-ignore-tlog=true", reference],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def signature_count(address: str, repository: str, digest: str, suffix: str = "sig") -> int:
    """How many signatures cosign's legacy ``.sig`` (or ``.att``) tag holds for ``digest``: one layer each."""
    tag = digest.replace(":", "-") + "." + suffix
    if tag not in registry_api.tags(address, repository):
        return 0
    return len(registry_api.manifest(address, repository, tag)["layers"])


def platform_digests(address: str, repository: str, digest: str) -> list[str]:
    index = registry_api.manifest(address, repository, digest)
    return [
        entry["digest"]
        for entry in index.get("manifests", [])
        if (entry.get("platform") or {}).get("architecture") != "unknown"
    ]


def unmasked(log: str, secret: str) -> str:
    """The log without the one line that tells the runner to mask ``secret``, which must come first."""
    mask = f"::add-mask::{secret}"
    assert log.splitlines()[0] == mask
    return log.replace(mask, "")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    scratch_context(tmp_path, f"signed {tmp_path.name}")
    return tmp_path


# --- signing on build --------------------------------------------------------------------------------------


def test_single_platform_build_is_signed_and_a_rerun_writes_nothing(
    registry: RegistryServer, keys: KeyPair, workdir: Path
) -> None:
    repo = unique("signed")
    image = f"{registry.address}/{repo}"
    run = build(workdir, image, keys)
    assert run.code == 0, run.log
    digest = run.outputs["digest"]
    assert run.outputs["signed"] == "true"
    assert PASSWORD not in unmasked(run.log, PASSWORD)
    assert "cosign verify --key cosign.pub" in run.outputs["verify-command"]
    assert run.outputs["cosign-version"]
    assert "Signed (" in run.summary
    targets = [digest, *platform_digests(registry.address, repo, digest)]
    for target in targets:
        checked = cosign_verify(f"{image}@{target}", keys.public)
        assert checked.returncode == 0, checked.stderr
        payloads = json.loads(checked.stdout)
        assert payloads[0]["optional"]["dev.buildonce.commit"] == SHA
        assert payloads[0]["optional"]["dev.buildonce.run"] == "https://github.com/acme/widget/actions/runs/777"
        assert signature_count(registry.address, repo, target) == 1
    refs = run.outputs["signature-refs"].splitlines()
    assert f"{image}:{digest.replace(':', '-')}.sig" in refs

    again = build(workdir, image, keys)
    assert again.code == 0, again.log
    assert again.outputs["signed"] == "true"
    assert again.outputs["reused"] == "true"
    assert "nothing written" in again.summary
    for target in targets:
        assert signature_count(registry.address, repo, target) == 1, target


def test_multi_platform_build_signs_the_index_and_each_platform(
    registry: RegistryServer, keys: KeyPair, workdir: Path
) -> None:
    repo = unique("signed-multi")
    image = f"{registry.address}/{repo}"
    run = build(workdir, image, keys, {"platforms": "linux/amd64,linux/arm64", "provenance": "false"})
    assert run.code == 0, run.log
    digest = run.outputs["digest"]
    platforms = platform_digests(registry.address, repo, digest)
    assert len(platforms) == 2
    for target in [digest, *platforms]:
        checked = cosign_verify(f"{image}@{target}", keys.public)
        assert checked.returncode == 0, (target, checked.stderr)
        assert signature_count(registry.address, repo, target) == 1
    assert len(run.outputs["signature-refs"].splitlines()) == 3


def test_the_merge_of_legs_signs_the_index_and_each_platform_once(
    registry: RegistryServer, keys: KeyPair, tmp_path: Path
) -> None:
    """Legs are never signed (the merge's index is what is tested and shipped); the merge signs the index and
    each platform's image, and a second merge writes no second signature."""
    repo = unique("signed-legs")
    image = f"{registry.address}/{repo}"
    legs = []
    for platform in ("linux/amd64", "linux/arm64"):
        workdir = tmp_path / platform.replace("/", "-")
        scratch_context(workdir, f"hello from {platform}")
        inputs = {"images": image, "platforms": platform, "distribute": "leg", **FAST, **signing_inputs(keys)}
        leg = run_on_fixture("build", workdir, "push-default", inputs, env={"COSIGN_PASSWORD": PASSWORD})
        assert leg.code == 0, leg.log
        assert not leg.outputs.get("signed"), "a leg is not signed"
        legs.append(leg.outputs["leg"])
    merge_inputs = {
        "images": image,
        "platforms": "linux/amd64,linux/arm64",
        "legs": "\n".join(legs),
        **FAST,
        **signing_inputs(keys),
    }
    for attempt in (1, 2):
        workdir = tmp_path / f"merge-{attempt}"
        workdir.mkdir()
        merged = run_on_fixture("merge", workdir, "push-default", merge_inputs, env={"COSIGN_PASSWORD": PASSWORD})
        assert merged.code == 0, merged.log
        assert merged.outputs["signed"] == "true"
        assert PASSWORD not in unmasked(merged.log, PASSWORD)
    digest = merged.outputs["digest"]
    platforms = platform_digests(registry.address, repo, digest)
    assert len(platforms) == 2
    for target in [digest, *platforms]:
        checked = cosign_verify(f"{image}@{target}", keys.public)
        assert checked.returncode == 0, (target, checked.stderr)
        assert signature_count(registry.address, repo, target) == 1, target


def test_not_signing_says_why(registry: RegistryServer, workdir: Path) -> None:
    run = build(workdir, f"{registry.address}/{unique('unsigned')}", None)
    assert run.code == 0, run.log
    assert run.outputs["signed"] == "false"
    assert run.outputs["verify-command"] == ""
    assert "Not signed: no 'sign-key' and no OIDC token" in run.summary


def test_wrong_password_is_a_clear_error_and_never_printed(
    registry: RegistryServer, keys: KeyPair, workdir: Path
) -> None:
    wrong = "not the password 12345"
    run = build(workdir, f"{registry.address}/{unique('badpass')}", keys, password=wrong)
    assert run.code == 1
    (error,) = run.errors()
    assert "could not decrypt the key" in error
    assert "COSIGN_PASSWORD" in error
    assert wrong not in unmasked(run.log, wrong)


def test_missing_cosign_names_how_to_install_it(registry: RegistryServer, keys: KeyPair, workdir: Path) -> None:
    bare = workdir / "bin"
    bare.mkdir()
    docker = shutil.which("docker")
    assert docker
    (bare / "docker").symlink_to(docker)
    repo = unique("nocosign")
    run = run_on_fixture(
        "build",
        workdir,
        "push-default",
        {"images": f"{registry.address}/{repo}", **FAST, **signing_inputs(keys)},
        env={"COSIGN_PASSWORD": PASSWORD, "PATH": f"{bare}:/usr/bin:/bin"},
    )
    assert run.code == 1, run.log
    (error,) = run.errors()
    assert "cosign is not on PATH" in error
    assert "sigstore/cosign-installer" in error
    assert registry_api.tags(registry.address, repo) == []
    assert run.outputs == {}


# --- verifying on consume ----------------------------------------------------------------------------------


def forget_locally(run: Run) -> None:
    """Remove the build's own names from the engine, so that only a pull could bring the image back."""
    names = run.outputs["tags"].splitlines()
    subprocess.run(["docker", "image", "rm", "-f", *names], capture_output=True, check=False, timeout=120)


def pulled(reference: str) -> bool:
    found = subprocess.run(["docker", "image", "inspect", reference], capture_output=True, check=False, timeout=60)
    return found.returncode == 0


def consume(workdir: Path, image: str, public: Path, inputs: dict[str, str]) -> Run:
    return run_on_fixture(
        "consume",
        workdir,
        "push-default",
        {
            "image": image,
            "verify-signature": "key",
            "verify-key": str(public),
            "verify-tlog": "false",
            **FAST,
            **inputs,
        },
    )


def test_consume_pulls_an_image_signed_by_the_key(registry: RegistryServer, keys: KeyPair, workdir: Path) -> None:
    image = f"{registry.address}/{unique('consume-signed')}"
    built = build(workdir, image, keys)
    assert built.code == 0, built.log
    forget_locally(built)
    run = consume(workdir, image, keys.public, {"tag": built.outputs["immutable-tag"], "sha": SHA})
    assert run.code == 0, run.log
    assert run.outputs["digest"] == built.outputs["digest"]
    assert run.log.count("Signature verified:") == 2  # the platform manifest pulled, and its index
    assert pulled(f"{image}@{built.outputs['digest']}")
    verified = run_on_fixture(
        "verify",
        workdir,
        "push-default",
        {
            "image": built.outputs["image"],
            "verify-signature": "key",
            "verify-key": str(keys.public),
            "verify-tlog": "false",
            "sha": SHA,
        },
    )
    assert verified.code == 0, verified.log
    assert verified.log.count("Signature verified:") == 2


@pytest.mark.parametrize("case", ["unsigned", "wrong-key"])
def test_consume_refuses_an_unsigned_image_or_another_key_and_pulls_nothing(
    registry: RegistryServer, keys: KeyPair, other_keys: KeyPair, workdir: Path, case: str
) -> None:
    image = f"{registry.address}/{unique('consume-' + case)}"
    built = build(workdir, image, other_keys if case == "wrong-key" else None, password="another password")
    assert built.code == 0, built.log
    forget_locally(built)
    run = consume(workdir, image, keys.public, {"tag": built.outputs["immutable-tag"], "sha": SHA})
    assert run.code == 1, run.log
    (error,) = run.errors()
    digest = built.outputs["digest"]
    assert f"{image}:{built.outputs['immutable-tag']} holds {digest}" in error
    assert f"is not signed by the key {keys.public}" in error
    assert "Nothing was pulled" in error
    assert "::group::Pull" not in run.log
    assert run.outputs == {}
    assert not pulled(f"{image}@{digest}")
    verified = run_on_fixture(
        "verify",
        workdir,
        "push-default",
        {
            "image": built.outputs["image"],
            "verify-signature": "key",
            "verify-key": str(keys.public),
            "verify-tlog": "false",
            "sha": SHA,
        },
    )
    assert verified.code == 1
    assert "is not signed by the key" in verified.errors()[0]


def test_consume_refuses_a_tag_moved_after_signing(
    registry: RegistryServer, keys: KeyPair, workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    image = f"{registry.address}/{unique('consume-moved')}"
    signed = build(workdir, image, keys, {"tags": "release"})
    assert signed.code == 0, signed.log
    before = consume(workdir, image, keys.public, {"tag": "release", "check-freshness": "false"})
    assert before.code == 0, before.log
    other = scratch_context(tmp_path_factory.mktemp("other"), "another commit's content")
    moved = build(other, image, None, {"tags": "release"}, fixture="push-branch")
    assert moved.code == 0, moved.log
    assert moved.outputs["digest"] != signed.outputs["digest"]
    forget_locally(moved)
    run = consume(workdir, image, keys.public, {"tag": "release", "check-freshness": "false"})
    assert run.code == 1, run.log
    (error,) = run.errors()
    assert f"{image}:release holds {moved.outputs['digest']}" in error
    assert not pulled(f"{image}@{moved.outputs['digest']}")


# --- faults -------------------------------------------------------------------------------------------------


def test_a_registry_fault_while_the_signature_is_pushed_is_retried_without_a_duplicate(
    fault_proxy: FaultProxy, registry: RegistryServer, keys: KeyPair, workdir: Path
) -> None:
    repo = unique("sign-fault")
    # More failures than cosign retries by itself, so that buildonce's own retry has to check and sign again.
    rule = fault_proxy.add_rule(Status(503), method="PUT", path=r"/manifests/sha256-[0-9a-f]+\.sig", times=4)
    run = build(workdir, f"{fault_proxy.address}/{repo}", keys)
    assert run.code == 0, run.log
    assert rule.hits == 4
    assert "Retrying" in run.log
    digest = run.outputs["digest"]
    for target in [digest, *platform_digests(registry.address, repo, digest)]:
        assert signature_count(registry.address, repo, target) == 1, target
        checked = cosign_verify(f"{registry.address}/{repo}@{target}", keys.public)
        assert checked.returncode == 0, checked.stderr


# --- attestations ------------------------------------------------------------------------------------------


def cosign_verify_attestation(reference: str, public: Path, kind: str) -> list[dict[str, Any]]:
    checked = subprocess.run(
        [
            "cosign",
            "verify-attestation",
            "--key",
            str(public),
            "--insecure-ignore-tlog=true",
            "--type",
            kind,
            reference,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, (reference, kind, checked.stderr)
    statements: list[dict[str, Any]] = []
    for line in checked.stdout.splitlines():
        envelope = json.loads(line)
        statements.append(json.loads(base64.b64decode(envelope["payload"])))
    return statements


@pytest.fixture(scope="session")
def scanner(busybox_image: str) -> str:
    return scanner_image(busybox_image)


def test_provenance_and_sbom_are_attested_per_platform(
    registry: RegistryServer, keys: KeyPair, workdir: Path, scanner: str
) -> None:
    repo = unique("attested")
    image = f"{registry.address}/{repo}"
    inputs = {"platforms": "linux/amd64,linux/arm64", "sbom": f"generator={scanner}", "provenance": "mode=max"}
    run = build(workdir, image, keys, inputs)
    assert run.code == 0, run.log
    digest = run.outputs["digest"]
    platforms = platform_digests(registry.address, repo, digest)
    assert len(platforms) == 2
    refs = run.outputs["attestation-refs"].splitlines()
    assert len(refs) == 4
    for target in platforms:
        reference = f"{image}@{target}"
        (provenance,) = cosign_verify_attestation(reference, keys.public, "slsaprovenance02")
        assert provenance["subject"][0]["digest"]["sha256"] == target.removeprefix("sha256:")
        assert provenance["predicate"]["buildType"]
        (sbom,) = cosign_verify_attestation(reference, keys.public, "spdxjson")
        files = {entry["fileName"] for entry in sbom["predicate"]["files"]}
        assert files == {"./hello.txt"}
        assert f"{image}:{target.replace(':', '-')}.att (slsaprovenance02)" in refs
        assert signature_count(registry.address, repo, target, "att") == 2
    # The index itself carries no SBOM: one per platform, never one for the whole.
    assert signature_count(registry.address, repo, digest, "att") == 0

    again = build(workdir, image, keys, inputs)
    assert again.code == 0, again.log
    assert "nothing written" in again.summary
    for target in platforms:
        assert signature_count(registry.address, repo, target, "att") == 2
        assert signature_count(registry.address, repo, target) == 1


# --- the artifact ------------------------------------------------------------------------------------------


def test_a_signed_artifact_is_verified_before_loading_and_a_tampered_one_refused(
    registry: RegistryServer, keys: KeyPair, workdir: Path
) -> None:
    image = f"{registry.address}/{unique('signed-artifact')}"
    built = build(workdir, image, keys, {"artifact": "true"})
    assert built.code == 0, built.log
    tar = Path(built.outputs["artifact-path"])
    bundle = tar.with_name(tar.name + ".sigstore.json")
    assert bundle.is_file()
    argv = ["cosign", "verify-blob", "--key", str(keys.public), "--insecure-ignore-tlog=true", "--bundle", str(bundle)]
    checked = subprocess.run(
        [*argv, str(tar)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    forget_locally(built)
    from_tar = {"source": "artifact", "artifact-path": str(tar), "tag": built.outputs["immutable-tag"], "sha": SHA}
    run = consume(workdir, image, keys.public, from_tar)
    assert run.code == 0, run.log
    assert f"Signature verified: {tar.name}" in run.log

    # Someone who can change the tar and its checksum still cannot sign it with the key.
    forget_locally(built)
    with tar.open("ab") as handle:
        handle.write(b"\0" * 1024)
    digest = hashlib.sha256(tar.read_bytes()).hexdigest()
    tar.with_name(tar.name + ".sha256").write_text(f"{digest}  {tar.name}\n")
    tampered = consume(workdir, image, keys.public, from_tar)
    assert tampered.code == 1, tampered.log
    (error,) = tampered.errors()
    assert f"the artifact {tar} is not signed by the key {keys.public}" in error
    assert "Nothing was loaded" in error
    assert "::group::Load" not in tampered.log

    bundle.unlink()
    unsigned = consume(workdir, image, keys.public, from_tar)
    assert unsigned.code == 1
    assert "has no signature bundle" in unsigned.errors()[0]


# --- keyless, by recorded arguments ------------------------------------------------------------------------
# Keyless signing needs the job's OIDC token, Fulcio and Rekor; none can run on loopback. A stand-in cosign on
# PATH records the arguments buildonce gives it (and plays back the signatures it "wrote"), against a real
# build and registry.

OIDC = {"ACTIONS_ID_TOKEN_REQUEST_URL": "http://127.0.0.1:9/token", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t"}
IDENTITY = r"^https://github\.com/acme/widget/\.github/workflows/[^@]+@refs/.+$"


@pytest.fixture
def standin(tmp_path: Path) -> tuple[dict[str, str], Path]:
    log = tmp_path / "cosign-calls.jsonl"
    cosign_standin.install(tmp_path / "standin-bin", log)
    return {"PATH": f"{tmp_path / 'standin-bin'}:{os.environ['PATH']}", **OIDC}, log


def test_keyless_signing_passes_cosign_the_token_and_expects_this_repository_s_identity(
    registry: RegistryServer, workdir: Path, standin: tuple[dict[str, str], Path]
) -> None:
    env, log = standin
    repo = unique("keyless")
    image = f"{registry.address}/{repo}"
    run = run_on_fixture("build", workdir, "push-default", {"images": image, **FAST}, env=env)
    assert run.code == 0, run.log
    assert run.outputs["signed"] == "true"
    assert run.outputs["cosign-version"] == "v2.5.0-standin"
    digest = run.outputs["digest"]
    refs = [f"{image}@{d}" for d in [digest, *platform_digests(registry.address, repo, digest)]]
    (sign,) = cosign_standin.calls(log, "sign")
    assert sign["oidc"] is True
    assert sign["argv"][:2] == ["sign", "--yes"]
    assert "--key" not in sign["argv"]
    assert sign["argv"][-len(refs) :] == refs
    assert f"dev.buildonce.commit={SHA}" in sign["argv"]
    for verify in cosign_standin.calls(log, "verify"):
        argv = verify["argv"]
        assert argv[argv.index("--certificate-oidc-issuer") + 1] == "https://token.actions.githubusercontent.com"
        assert argv[argv.index("--certificate-identity-regexp") + 1] == IDENTITY
        assert argv[argv.index("--certificate-github-workflow-sha") + 1] == SHA
    assert "--certificate-identity-regexp" in run.outputs["verify-command"]

    # A re-run finds the signatures there (as the stand-in plays them back) and signs nothing.
    again = run_on_fixture("build", workdir, "push-default", {"images": image, **FAST}, env=env)
    assert again.code == 0, again.log
    assert len(cosign_standin.calls(log, "sign")) == 1

    consumed = run_on_fixture(
        "consume",
        workdir,
        "push-default",
        {"image": image, "tag": run.outputs["immutable-tag"], "sha": SHA, "verify-signature": "keyless", **FAST},
        env=env,
    )
    assert consumed.code == 0, consumed.log
    checked = [call["argv"] for call in cosign_standin.calls(log, "verify")][-2:]
    assert {argv[-1] for argv in checked} == {refs[0], refs[1]}
    for argv in checked:
        assert argv[argv.index("--certificate-identity-regexp") + 1] == IDENTITY
        assert argv[argv.index("--certificate-github-workflow-sha") + 1] == SHA


def test_a_fork_s_image_is_never_signed_even_with_a_token(
    registry: RegistryServer, workdir: Path, standin: tuple[dict[str, str], Path]
) -> None:
    env, log = standin
    run = run_on_fixture(
        "build", workdir, "pull-request-fork", {"images": f"{registry.address}/{unique('fork')}", **FAST}, env=env
    )
    assert run.code == 0, run.log
    assert run.outputs["signed"] == "false"
    assert "a fork's image is never signed" in run.summary
    assert cosign_standin.calls(log) == []


def test_every_registry_the_image_went_to_gets_the_signatures_with_the_build_s_login(
    registry: RegistryServer, auth_registry: RegistryServer, keys: KeyPair, workdir: Path, tmp_path: Path
) -> None:
    repo = unique("two-registries")
    login = {"registry": auth_registry.address, "username": TEST_USER, "password": TEST_PASSWORD}
    images = f"{registry.address}/{repo}\n{auth_registry.address}/{repo}"
    run = build(workdir, images, keys, login)
    assert run.code == 0, run.log
    digest = run.outputs["digest"]
    assert len(run.outputs["signature-refs"].splitlines()) == 4  # the index and its platform, twice
    config = tmp_path / "docker-config"
    config.mkdir()
    token = base64.b64encode(f"{TEST_USER}:{TEST_PASSWORD}".encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {auth_registry.address: {"auth": token}}}))
    for address in (registry.address, auth_registry.address):
        checked = subprocess.run(
            [
                "cosign",
                "verify",
                "--key",
                str(keys.public),
                "--insecure-ignore-tlog=true",
                f"{address}/{repo}@{digest}",
            ],
            env={**os.environ, "DOCKER_CONFIG": str(config)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert checked.returncode == 0, (address, checked.stderr)
    consumed = consume(
        workdir,
        f"{auth_registry.address}/{repo}",
        keys.public,
        {"digest": digest, "sha": SHA, **login},
    )
    assert consumed.code == 0, consumed.log
    assert consumed.log.count("Signature verified:") == 2
