"""The signing decisions, cosign's arguments, and the signing step against a cosign and a registry in memory."""

from __future__ import annotations

import io
import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fakes import IMAGE as FAKE_IMAGE
from fakes import SHA as FAKE_SHA
from fakes import FakeEngine, FakeRegistry, manifest_for

from buildonce.commands.consume import Consumer
from buildonce.commands.consume import Target as ConsumeTarget
from buildonce.commands.sign import Request, SignatureVerifier, Signer, Target
from buildonce.docker.cosign import Cosign, Result
from buildonce.errors import InputError, RegistryError, SignatureError, SigningError, VerificationError
from buildonce.github.workflow import Console, Inputs
from buildonce.labels import Keys
from buildonce.oci import OCI_INDEX, OCI_MANIFEST, Manifest
from buildonce.references import ImageName, parse_image_name
from buildonce.retry import RetryPolicy
from buildonce.signing import (
    GITHUB_ISSUER,
    Identity,
    SignatureCheck,
    SignatureFormat,
    SignMode,
    SignOptions,
    VerifyMode,
    decide,
    default_provenance,
    nothing_to_sign,
    sign_args,
    sign_options,
    signature_check,
    verify_args,
    workflow_commit,
    workflow_identity_regexp,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
IMAGE = parse_image_name("registry.test/acme/widget", source="test")


def inputs(**values: str) -> Inputs:
    return Inputs({f"INPUT_{name.upper().replace('_', '-')}": value for name, value in values.items()})


# --- options ------------------------------------------------------------------------------------------------


def test_sign_options_default_to_auto_legacy_with_the_transparency_log() -> None:
    options = sign_options(Inputs({}))
    assert options == SignOptions(SignMode.AUTO, "", SignatureFormat.LEGACY, tlog=True)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"sign": "yes"}, "input 'sign'"),
        ({"signature_format": "v3"}, "input 'signature-format'"),
        ({"sign_tlog": "no"}, "input 'sign-tlog'"),
        ({"sign_key": "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"}, "input 'sign-key' holds a key itself"),
    ],
)
def test_bad_sign_options_name_the_input(values: dict[str, str], named: str) -> None:
    with pytest.raises(InputError, match=re.escape(named)):
        sign_options(inputs(**values))


def test_verify_signature_key_needs_a_key() -> None:
    with pytest.raises(InputError, match="'verify-key' is empty"):
        signature_check(inputs(verify_signature="key"))
    assert signature_check(inputs(verify_signature="key", verify_key="cosign.pub")).mode is VerifyMode.KEY


@pytest.mark.parametrize("regexp", ["(unclosed", "[[", "^a$\n^b$"])
def test_a_bad_identity_regexp_is_refused(regexp: str) -> None:
    with pytest.raises(InputError, match="certificate-identity-regexp"):
        signature_check(inputs(verify_signature="keyless", certificate_identity_regexp=regexp))


def test_a_regexp_python_only_warns_about_is_taken() -> None:
    check = signature_check(inputs(verify_signature="keyless", certificate_identity_regexp="^[[a]x$"))
    assert check.identity_regexp == "^[[a]x$"


# --- decisions ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "key", "pushed", "fork", "oidc", "sign", "keyless"),
    [
        (SignMode.AUTO, "", True, False, True, True, True),
        (SignMode.AUTO, "", True, False, False, False, False),
        (SignMode.AUTO, "env://K", True, False, False, True, False),
        (SignMode.AUTO, "env://K", True, False, True, True, False),  # a key wins over the token
        (SignMode.AUTO, "", False, False, True, False, False),  # nothing pushed
        (SignMode.AUTO, "", True, True, True, False, False),  # a fork's
        (SignMode.TRUE, "", True, True, True, False, False),  # a fork's, even when asked
        (SignMode.FALSE, "env://K", True, False, True, False, False),
        (SignMode.TRUE, "", True, False, True, True, True),
    ],
)
def test_decide(mode: SignMode, key: str, pushed: bool, fork: bool, oidc: bool, sign: bool, keyless: bool) -> None:
    decision = decide(SignOptions(mode, key), pushed=pushed, fork=fork, oidc=oidc)
    assert (decision.sign, decision.keyless) == (sign, keyless)
    assert decision.reason


@pytest.mark.parametrize(
    ("key", "pushed", "fork", "artifact", "signs"),
    [
        ("env://K", True, False, False, True),
        ("env://K", False, False, True, True),  # nothing pushed, but the artifact is signed
        ("env://K", False, False, False, False),
        ("env://K", True, True, True, False),  # a fork's: neither
        ("", True, False, True, False),  # no key and no token: neither
    ],
)
def test_nothing_to_sign_says_why_unless_the_image_or_the_artifact_is_signed(
    key: str, pushed: bool, fork: bool, artifact: bool, signs: bool
) -> None:
    options = SignOptions(SignMode.AUTO, key)
    unsigned = nothing_to_sign(options, pushed=pushed, fork=fork, oidc=False, artifact=artifact, subject="r/app")
    if signs:
        assert unsigned is None
        return
    assert unsigned is not None
    assert unsigned.reason == decide(options, pushed=pushed, fork=fork, oidc=False).reason
    assert (unsigned.signed, unsigned.subject_name) == (False, "r/app")
    assert unsigned.outputs()["signed"] == "false"


def test_sign_true_without_key_or_token_is_an_input_error() -> None:
    with pytest.raises(InputError, match="id-token: write"):
        decide(SignOptions(SignMode.TRUE), pushed=True, fork=False, oidc=False)


def test_provenance_is_max_only_for_a_public_repository() -> None:
    assert default_provenance(False) == "mode=max"
    assert default_provenance(True) == "mode=min"
    assert default_provenance(None) == "mode=min"


# --- identities and arguments -------------------------------------------------------------------------------


def test_the_keyless_identity_is_this_repository_s_workflows_only() -> None:
    pattern = re.compile(workflow_identity_regexp("https://github.com", "acme/widget"))
    assert pattern.match("https://github.com/acme/widget/.github/workflows/ci.yml@refs/heads/main")
    assert pattern.match("https://github.com/acme/widget/.github/workflows/release.yml@refs/tags/v1.0.0")
    assert not pattern.match("https://github.com/acme/widget-fork/.github/workflows/ci.yml@refs/heads/main")
    assert not pattern.match("https://github.com/evil/acme/widget/.github/workflows/ci.yml@refs/heads/main")
    assert not pattern.match("https://github.com/acmeXwidget/.github/workflows/ci.yml@refs/heads/main")


def test_sign_args_with_a_key_list_each_digest_and_no_secret() -> None:
    args = sign_args(
        ["r@sha256:1", "r@sha256:2"],
        key="env://COSIGN_PRIVATE_KEY",
        notes={"dev.buildonce.commit": SHA},
        tlog=False,
        signature_format=SignatureFormat.LEGACY,
        bundle_flag=False,
    )
    assert args == [
        "sign",
        "--yes",
        "--key",
        "env://COSIGN_PRIVATE_KEY",
        "-a",
        f"dev.buildonce.commit={SHA}",
        "--tlog-upload=false",
        "r@sha256:1",
        "r@sha256:2",
    ]
    assert "--recursive" not in args


def test_sign_args_pin_the_legacy_format_on_a_cosign_that_writes_bundles_by_default() -> None:
    def args(signature_format: SignatureFormat, bundle_flag: bool) -> list[str]:
        return sign_args(["r"], key="", notes={}, tlog=True, signature_format=signature_format, bundle_flag=bundle_flag)

    assert "--new-bundle-format=false" in args(SignatureFormat.LEGACY, True)
    assert not any("bundle" in arg for arg in args(SignatureFormat.LEGACY, False))
    assert "--new-bundle-format=true" in args(SignatureFormat.BUNDLE, True)


def test_keyless_verify_args_name_issuer_identity_and_workflow_commit() -> None:
    identity = Identity(identity_regexp="^x$", workflow_sha=SHA)
    args = verify_args("r@sha256:1", identity, notes={"n.commit": SHA})
    assert args == [
        "verify",
        "--certificate-oidc-issuer",
        GITHUB_ISSUER,
        "--certificate-identity-regexp",
        "^x$",
        "--certificate-github-workflow-sha",
        SHA,
        "-a",
        f"n.commit={SHA}",
        "--output",
        "json",
        "r@sha256:1",
    ]


# --- cosign's failures --------------------------------------------------------------------------------------


def test_a_wrong_password_is_named_without_the_password() -> None:
    cosign = Cosign("cosign", {})
    failure = cosign.failure(
        "sign r", Result(1, "", "Error: getting signer: reading key: decrypt: encrypted: decryption failed")
    )
    assert isinstance(failure, SigningError)
    assert "COSIGN_PASSWORD" in str(failure)


def test_a_registry_fault_is_transient_and_an_absent_signature_is_unsigned() -> None:
    fault = Result(
        1, "", "Error: PUT https://r/v2/x/manifests/sha256-1.sig: unexpected status code 503 Service Unavailable"
    )
    assert isinstance(Cosign("cosign", {}).failure("sign", fault), RegistryError)
    assert Cosign.unsigned(Result(1, "", "Error: no signatures found"))
    assert Cosign.unsigned(Result(1, "", "Error: no matching signatures: invalid signature"))
    assert not Cosign.unsigned(fault)


def test_missing_cosign_names_how_to_install_it() -> None:
    with pytest.raises(SigningError, match="cosign-installer"):
        Cosign.find({"PATH": "/nonexistent"})


# --- the step, against fakes --------------------------------------------------------------------------------


def child(n: int) -> Manifest:
    return Manifest.from_bytes(json.dumps({"mediaType": OCI_MANIFEST, "n": n}).encode(), OCI_MANIFEST)


def index_of(*children: Manifest) -> Manifest:
    entries = [
        {"mediaType": OCI_MANIFEST, "digest": c.digest, "size": 1, "platform": {"os": "linux", "architecture": arch}}
        for c, arch in zip(children, ("amd64", "arm64"), strict=False)
    ]
    entries.append(
        {
            "mediaType": OCI_MANIFEST,
            "digest": "sha256:" + "a" * 64,
            "size": 1,
            "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
        }
    )
    return Manifest.from_bytes(json.dumps({"mediaType": OCI_INDEX, "manifests": entries}).encode(), OCI_INDEX)


@dataclass
class Registry:
    manifests: dict[str, Manifest]

    def get_manifest(self, image: object, reference: str) -> Manifest | None:
        return self.manifests.get(reference)

    def get_blob(self, image: object, digest: str) -> bytes:
        raise AssertionError("no attestation manifests are read in these tests")


@dataclass
class FakeCosign:
    """Signatures in memory: ``sign`` adds them (or fails ``faults`` times first), ``verify`` finds them."""

    signed: set[str] = field(default_factory=set)
    calls: list[list[str]] = field(default_factory=list)
    faults: int = 0
    lose_writes: bool = False

    def run(self, args: Sequence[str], *, timeout: float) -> Result:
        self.calls.append(list(args))
        if args[0] == "sign":
            if self.faults:
                self.faults -= 1
                return Result(1, "", "Error: unexpected status code 503 Service Unavailable")
            if not self.lose_writes:
                self.signed.update(a for a in args if "@" in a)
            return Result(0, "", "")
        if args[0] == "verify":
            return Result(0, "[]", "") if args[-1] in self.signed else Result(1, "", "Error: no signatures found")
        raise AssertionError(args)

    def version(self) -> str:
        return "v2.5.0"

    def takes_flag(self, command: str, flag: str) -> bool:
        return False

    def public_key(self, key: str, directory: Path) -> Path:
        return directory / "cosign.pub"

    def failure(self, what: str, result: Result) -> Exception:
        return Cosign("cosign", {}).failure(what, result)

    @staticmethod
    def unsigned(result: Result) -> bool:
        return Cosign.unsigned(result)

    def signs(self) -> list[list[str]]:
        return [call for call in self.calls if call[0] == "sign"]


def signer(cosign: FakeCosign, tmp_path: Path) -> tuple[Signer, str, list[str]]:
    amd, arm = child(1), child(2)
    index = index_of(amd, arm)
    registry = Registry({m.digest: m for m in (amd, arm, index)})
    policy = RetryPolicy(attempts=3, wait_seconds=0, sleep=lambda _: None)
    console = Console(io.StringIO())
    refs = [IMAGE.with_digest(d) for d in (index.digest, amd.digest, arm.digest)]
    return Signer(cosign, registry, policy, console, tmp_path), index.digest, refs


REQUEST = Request(Identity(key="cosign.key"), {"n.commit": SHA}, {"n.commit": SHA}, attest=False)


def test_signs_the_index_and_each_platform_once_and_never_attestation_manifests(tmp_path: Path) -> None:
    cosign = FakeCosign()
    step, digest, refs = signer(cosign, tmp_path)
    result = step.sign(digest, [IMAGE], REQUEST, "with a key")
    (sign,) = cosign.signs()
    assert sign[-3:] == refs
    assert "sha256:" + "a" * 64 not in " ".join(sign)
    assert result.signed
    assert len(result.written) == 3
    assert result.verify_command.startswith("cosign verify --key cosign.pub")


def test_an_image_already_signed_for_this_commit_is_not_signed_again(tmp_path: Path) -> None:
    cosign = FakeCosign()
    step, digest, refs = signer(cosign, tmp_path)
    cosign.signed.update(refs)
    result = step.sign(digest, [IMAGE], REQUEST, "with a key")
    assert cosign.signs() == []
    assert result.signed
    assert result.written == []
    assert "nothing written" in result.summary_line()


def test_a_fault_while_signing_is_retried_and_only_what_is_missing_is_signed(tmp_path: Path) -> None:
    cosign = FakeCosign(faults=1)
    step, digest, refs = signer(cosign, tmp_path)
    cosign.signed.add(refs[1])  # one platform was signed before
    step.sign(digest, [IMAGE], REQUEST, "with a key")
    first, second = cosign.signs()
    assert first[-2:] == second[-2:] == [refs[0], refs[2]]


def test_a_write_that_does_not_read_back_fails_the_step(tmp_path: Path) -> None:
    cosign = FakeCosign(lose_writes=True)
    step, digest, _ = signer(cosign, tmp_path)
    with pytest.raises(VerificationError, match="does not verify when read back"):
        step.sign(digest, [IMAGE], REQUEST, "with a key")


def test_bundle_format_needs_a_cosign_that_writes_bundles(tmp_path: Path) -> None:
    step, digest, _ = signer(FakeCosign(), tmp_path)
    bundle = Request(Identity(key="k"), {}, {}, signature_format=SignatureFormat.BUNDLE, attest=False)
    with pytest.raises(SigningError, match="signature-format"):
        step.sign(digest, [IMAGE], bundle, "with a key")


def test_targets_of_a_single_manifest_are_just_it(tmp_path: Path) -> None:
    single = child(9)
    registry = Registry({single.digest: single})
    policy = RetryPolicy(attempts=1, wait_seconds=0, sleep=lambda _: None)
    step = Signer(FakeCosign(), registry, policy, Console(io.StringIO()), tmp_path)
    index, targets = step._targets(IMAGE, single.digest)
    assert index is None
    assert targets == [Target(IMAGE, single.digest)]


# --- the action's install decision --------------------------------------------------------------------------

SIGNING_SCRIPT = Path(__file__).resolve().parents[2] / "action" / "signing.sh"


@pytest.mark.parametrize(
    ("sign", "key", "token", "install"),
    [
        ("auto", "", "", "false"),
        ("auto", "env://K", "", "true"),
        ("auto", "", "https://token.invalid", "true"),
        ("true", "", "", "true"),
        ("false", "env://K", "https://token.invalid", "false"),
        ("TRUE", "", "", "true"),
    ],
)
def test_the_action_installs_cosign_only_when_the_job_will_sign(
    tmp_path: Path, sign: str, key: str, token: str, install: str
) -> None:
    output = tmp_path / "output"
    env = {"PATH": "/usr/bin:/bin", "GITHUB_OUTPUT": str(output), "INPUT_SIGN": sign, "INPUT_SIGN_KEY": key}
    if token:
        env["ACTIONS_ID_TOKEN_REQUEST_URL"] = token
    subprocess.run(["bash", str(SIGNING_SCRIPT)], env=env, check=True, capture_output=True, timeout=30)
    assert output.read_text() == f"install={install}\n"


# --- consume: verified before the pull -----------------------------------------------------------------------


def test_consume_checks_the_signature_before_pulling_and_pulls_nothing_when_it_fails() -> None:
    registry = FakeRegistry()
    built = manifest_for(FAKE_SHA)
    registry.tags[(FAKE_IMAGE, "main")] = registry.store(built, FAKE_SHA)
    engine = FakeEngine(registry)
    policy = RetryPolicy(attempts=2, wait_seconds=0, sleep=lambda _: None)
    cosign = FakeCosign()
    check = SignatureCheck(VerifyMode.KEY, key="cosign.pub", tlog=False)
    verifier = SignatureVerifier(cosign, check, Identity(key="cosign.pub"), policy, Console(io.StringIO()))
    taker = Consumer(engine, engine, registry, policy, Keys(), True, Console(io.StringIO()), signatures=verifier)
    wanted = ConsumeTarget(ImageName(FAKE_IMAGE), ("main",), "", FAKE_SHA)
    with pytest.raises(SignatureError, match=f"{FAKE_IMAGE}:main holds {built.digest}"):
        taker.from_registry(wanted)
    assert engine.pulled == []
    (verify,) = cosign.calls
    assert verify[-1] == f"{FAKE_IMAGE}@{built.digest}"
    assert "--insecure-ignore-tlog=true" in verify

    cosign.signed.add(f"{FAKE_IMAGE}@{built.digest}")
    assert taker.from_registry(wanted).digest == built.digest
    assert engine.pulled == [f"{FAKE_IMAGE}@{built.digest}"]


# --- the workflow commit a keyless certificate names -----------------------------------------------------------

MERGE = "f" * 40


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ("push", SHA),
        ("merge_group", SHA),
        ("schedule", SHA),
        # A pull request's run signs at GitHub's merge commit: this job's GITHUB_SHA in that same event.
        ("pull_request", MERGE),
        ("pull_request_target", MERGE),
        # The triggering run may be a pull request's, whose merge commit the payload does not name: not pinned.
        ("workflow_run", ""),
    ],
)
def test_the_workflow_commit_is_the_one_the_signing_run_ran_at(event: str, expected: str) -> None:
    assert workflow_commit(event, MERGE, SHA) == expected


def test_keyless_verification_of_a_pull_request_pins_the_merge_commit_not_the_head() -> None:
    sha = workflow_commit("pull_request", MERGE, SHA)
    flags = SignatureCheck(VerifyMode.KEYLESS).identity(server_url="https://github.com", repository="a/w", sha=sha)
    argv = flags.verify_flags()
    assert argv[argv.index("--certificate-github-workflow-sha") + 1] == MERGE
    assert SHA not in argv
    unpinned = SignatureCheck(VerifyMode.KEYLESS).identity(server_url="https://github.com", repository="a/w", sha="")
    assert "--certificate-github-workflow-sha" not in unpinned.verify_flags()
