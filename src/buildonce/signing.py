"""Signing decisions and cosign's arguments, pure: whether to sign, how, which identity to expect, and the
exact command lines, from plain values.

Whatever image is signed (a build's, a merged index, a promoted one), the same rules apply: the pushed
digest is signed, the index and each platform manifest, with annotations naming the commit and the run, and
an image already signed for this commit by the same key or identity is not signed again.
"""

from __future__ import annotations

import enum
import re
import shlex
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from buildonce.errors import InputError
from buildonce.github.workflow import Inputs

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
"""The OIDC issuer of GitHub Actions' tokens, which Fulcio writes into a keyless certificate."""

SIGN_INPUTS: dict[str, str] = {
    "sign": "auto",
    "sign-key": "",
    "signature-format": "legacy",
    "sign-tlog": "true",
}
VERIFY_SIGNATURE_INPUTS: dict[str, str] = {
    "verify-signature": "false",
    "verify-key": "",
    "certificate-identity-regexp": "",
    "certificate-oidc-issuer": GITHUB_ISSUER,
    "verify-tlog": "true",
}

PROVENANCE_TYPE = "slsaprovenance02"
SBOM_TYPE = "spdxjson"
PREDICATE_TYPES = {
    "https://slsa.dev/provenance/v0.2": PROVENANCE_TYPE,
    "https://spdx.dev/Document": SBOM_TYPE,
}
"""BuildKit's in-toto predicate types, and cosign's ``--type`` for each."""


class SignMode(enum.Enum):
    AUTO = "auto"
    TRUE = "true"
    FALSE = "false"


class SignatureFormat(enum.Enum):
    LEGACY = "legacy"
    """A ``sha256-<digest>.sig`` tag beside the image: read by cosign v2 and v3 verifiers alike."""
    BUNDLE = "bundle"
    """A Sigstore bundle as an OCI referrer (cosign v3's default); cosign v2 verifiers cannot read it."""


class VerifyMode(enum.Enum):
    FALSE = "false"
    KEY = "key"
    KEYLESS = "keyless"


def _choice(inputs: Inputs, defaults: Mapping[str, str], name: str, kind: type[enum.Enum]) -> str:
    value = inputs.get(name, defaults[name]).strip().lower()
    allowed = [str(member.value) for member in kind]
    if value not in allowed:
        raise InputError(f"input '{name}' is {value!r}; it must be one of: {', '.join(allowed)}.")
    return value


def _switch(inputs: Inputs, defaults: Mapping[str, str], name: str) -> bool:
    value = inputs.get(name, defaults[name]).strip().lower()
    if value not in {"true", "false"}:
        raise InputError(f"input '{name}' is {value!r}; it must be true or false.")
    return value == "true"


@dataclass(frozen=True)
class SignOptions:
    mode: SignMode = SignMode.FALSE
    key: str = ""
    """A cosign key reference: a file, ``env://VAR``, or a KMS URI; empty for keyless."""
    format: SignatureFormat = SignatureFormat.LEGACY
    tlog: bool = True
    """Upload to the transparency log (Rekor). Off only for private infrastructure and tests."""


def sign_options(inputs: Inputs) -> SignOptions:
    mode = SignMode(_choice(inputs, SIGN_INPUTS, "sign", SignMode))
    key = inputs.get("sign-key").strip()
    _check_key(key, "sign-key")
    signature_format = SignatureFormat(_choice(inputs, SIGN_INPUTS, "signature-format", SignatureFormat))
    return SignOptions(mode, key, signature_format, _switch(inputs, SIGN_INPUTS, "sign-tlog"))


def _check_key(key: str, name: str) -> None:
    if key.startswith("-----BEGIN"):
        raise InputError(
            f"input '{name}' holds a key itself; give a reference to it instead: env://COSIGN_PRIVATE_KEY "
            "(with the key in that environment variable), a file path, or a KMS URI."
        )
    if "\n" in key:
        raise InputError(f"input '{name}' spans several lines; give one key reference (a path, env://VAR, a KMS URI).")


@dataclass(frozen=True)
class Decision:
    sign: bool
    keyless: bool
    reason: str


def decide(options: SignOptions, *, pushed: bool, fork: bool, oidc: bool) -> Decision:
    """Whether to sign, and how. ``auto`` signs with the key when one is given, else keyless when the job can
    get an OIDC token (``permissions: id-token: write``); never an image that was not pushed, nor a fork's."""
    if options.mode is SignMode.FALSE:
        return Decision(False, False, "set by the 'sign' input")
    if fork:
        return Decision(False, False, "a fork's image is never signed")
    if not pushed:
        return Decision(False, False, "the image was not pushed")
    if options.key:
        return Decision(True, False, "with the key of 'sign-key'")
    if oidc:
        return Decision(True, True, "keyless, with the job's OIDC token")
    if options.mode is SignMode.TRUE:
        raise InputError(
            "input 'sign' is true, but there is no key and no OIDC token: give 'sign-key' (with COSIGN_PASSWORD in "
            "the environment), or grant the job 'permissions: id-token: write' for keyless signing."
        )
    return Decision(False, False, "no 'sign-key' and no OIDC token (grant 'id-token: write' to sign keyless)")


@dataclass
class Signed:
    """What the signing step did for a published digest (and the artifact), or why it signed nothing."""

    signed: bool = False
    written: list[str] = field(default_factory=list)
    """Signatures and attestations this run wrote; empty when all were there already."""
    signature_refs: list[str] = field(default_factory=list)
    attestation_refs: list[str] = field(default_factory=list)
    verify_command: str = ""
    cosign_version: str = ""
    reason: str = ""
    subject_name: str = ""
    """The first image's name: what an attestation of the digest (GitHub's too) names as its subject."""

    def outputs(self) -> dict[str, str]:
        return {
            "subject-name": self.subject_name,
            "signed": "true" if self.signed else "false",
            "signature-refs": "\n".join(self.signature_refs),
            "attestation-refs": "\n".join(self.attestation_refs),
            "verify-command": self.verify_command,
            "cosign-version": self.cosign_version,
        }

    def summary_line(self) -> str:
        if not self.signed:
            return f"> Not signed: {self.reason}."
        wrote = (
            f"{len(self.written)} signature(s) and attestation(s) written"
            if self.written
            else "already signed for this commit: nothing written"
        )
        return f"> Signed ({self.reason}; {wrote}). Verify with `{self.verify_command}`"


def nothing_to_sign(
    options: SignOptions, *, pushed: bool, fork: bool, oidc: bool, artifact: bool, subject: str
) -> Signed | None:
    """The outcome when neither the image nor the artifact is to be signed (and why); None when one is."""
    decision = decide(options, pushed=pushed, fork=fork, oidc=oidc)
    if decision.sign or (artifact and decide(options, pushed=True, fork=fork, oidc=oidc).sign):
        return None
    return Signed(reason=decision.reason, subject_name=subject)


def default_provenance(private: bool | None) -> str:
    """BuildKit's provenance for a signed image when the 'provenance' input is empty: everything (mode=max)
    for a public repository, whose build is public anyway; for a private one, or when the event does not
    tell, mode=min, which leaves out the build's arguments and sources."""
    return "mode=max" if private is False else "mode=min"


@dataclass(frozen=True)
class Identity:
    """Whom a signature must come from: a public key, or a keyless certificate's issuer and subject."""

    key: str = ""
    """A public key reference (or, when signing, the private key it is derived from)."""
    issuer: str = GITHUB_ISSUER
    identity_regexp: str = ""
    workflow_sha: str = ""

    def verify_flags(self) -> list[str]:
        if self.key:
            return ["--key", self.key]
        flags = ["--certificate-oidc-issuer", self.issuer, "--certificate-identity-regexp", self.identity_regexp]
        if self.workflow_sha:
            flags += ["--certificate-github-workflow-sha", self.workflow_sha]
        return flags

    def describe(self) -> str:
        if self.key:
            return f"the key {self.key}"
        return f"a certificate of {self.issuer} for {self.identity_regexp}" + (
            f" at workflow commit {self.workflow_sha}" if self.workflow_sha else ""
        )


PULL_REQUEST_EVENTS = frozenset({"pull_request", "pull_request_target"})


def workflow_commit(event_name: str, github_sha: str, consumed_sha: str) -> str:
    """The commit a keyless signature's certificate names as its workflow's (``--certificate-github-workflow-sha``).

    A pull request's run signs at GitHub's merge commit (or, for pull_request_target, the base's), which is
    this job's GITHUB_SHA when it runs in that same event; a workflow_run's payload names the triggering run's
    head, never its merge commit, so there the commit is not pinned (the identity stays this repository's and
    the labels still name the commit consumed). Otherwise it is the commit consumed."""
    if event_name in PULL_REQUEST_EVENTS:
        return github_sha or consumed_sha
    if event_name == "workflow_run":
        return ""
    return consumed_sha


def workflow_identity_regexp(server_url: str, repository: str) -> str:
    """Any workflow of ``repository``, at any ref: what a keyless certificate of this repository's jobs names.

    A reusable workflow's certificate names the reusable workflow (its own repository), not the caller; a
    composite action's names the calling workflow. Give 'certificate-identity-regexp' for the former.
    """
    host = re.escape(server_url.rstrip("/"))
    return f"^{host}/{re.escape(repository)}/\\.github/workflows/[^@]+@refs/.+$"


@dataclass(frozen=True)
class SignatureCheck:
    """What a consumer requires of an image's signature before it pulls it."""

    mode: VerifyMode = VerifyMode.FALSE
    key: str = ""
    identity_regexp: str = ""
    issuer: str = GITHUB_ISSUER
    tlog: bool = True

    @property
    def on(self) -> bool:
        return self.mode is not VerifyMode.FALSE

    def identity(self, *, server_url: str, repository: str, sha: str) -> Identity:
        if self.mode is VerifyMode.KEY:
            return Identity(key=self.key)
        regexp = self.identity_regexp or workflow_identity_regexp(server_url, repository)
        return Identity(issuer=self.issuer, identity_regexp=regexp, workflow_sha=sha)


def signature_check(inputs: Inputs) -> SignatureCheck:
    defaults = VERIFY_SIGNATURE_INPUTS
    mode = VerifyMode(_choice(inputs, defaults, "verify-signature", VerifyMode))
    key = inputs.get("verify-key").strip()
    _check_key(key, "verify-key")
    if mode is VerifyMode.KEY and not key:
        raise InputError(
            "input 'verify-signature' is key, but 'verify-key' is empty. Give the public key: a file path, "
            "env://COSIGN_PUBLIC_KEY or a KMS URI."
        )
    regexp = inputs.get("certificate-identity-regexp").strip()
    if regexp:
        _check_regexp(regexp)
    issuer = inputs.get("certificate-oidc-issuer", defaults["certificate-oidc-issuer"]).strip() or GITHUB_ISSUER
    return SignatureCheck(mode, key, regexp, issuer, _switch(inputs, defaults, "verify-tlog"))


def _check_regexp(regexp: str) -> None:
    """Refuse what cannot be a regular expression before anything is pulled (cosign reads Go's RE2 syntax;
    Python's is close enough to catch a broken one). Python's warnings about sets are not errors here."""
    problem = "it spans several lines" if "\n" in regexp else ""
    if not problem:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                re.compile(regexp)
            except re.error as exc:
                problem = str(exc)
    if problem:
        raise InputError(
            f"input 'certificate-identity-regexp' is not a regular expression ({problem}); give one that matches "
            "the signing workflow's identity, e.g. ^https://github\\.com/OWNER/REPO/\\.github/workflows/.+$."
        )


# --- cosign's command lines ---------------------------------------------------------------------------------


def signature_notes(namespace: str, sha: str, run_url: str) -> dict[str, str]:
    """What a signature says about where it comes from; the commit's one is what a re-run looks for."""
    notes = {f"{namespace}.commit": sha}
    if run_url:
        notes[f"{namespace}.run"] = run_url
    return notes


def _annotation_flags(notes: Mapping[str, str]) -> list[str]:
    flags: list[str] = []
    for key, value in notes.items():
        flags += ["-a", f"{key}={value}"]
    return flags


def sign_args(
    references: Sequence[str],
    *,
    key: str,
    notes: Mapping[str, str],
    tlog: bool,
    signature_format: SignatureFormat,
    bundle_flag: bool,
) -> list[str]:
    """``cosign sign`` of exact digests (never recursive: the caller lists the index and each platform
    manifest itself, so attestation manifests are left alone and nothing is signed twice)."""
    args = ["sign", "--yes", *(["--key", key] if key else []), *_annotation_flags(notes)]
    if not tlog:
        args.append("--tlog-upload=false")
    args += _format_flags(signature_format, bundle_flag)
    return [*args, *references]


def _format_flags(signature_format: SignatureFormat, bundle_flag: bool) -> list[str]:
    # cosign v3 writes bundles unless told not to; v2 (without the flag) writes the legacy format only.
    if signature_format is SignatureFormat.BUNDLE:
        return ["--new-bundle-format=true"]
    return ["--new-bundle-format=false"] if bundle_flag else []


def verify_args(
    reference: str,
    identity: Identity,
    *,
    notes: Mapping[str, str] | None = None,
    tlog: bool = True,
    signature_format: SignatureFormat = SignatureFormat.LEGACY,
    bundle_flag: bool = False,
) -> list[str]:
    args = ["verify", *identity.verify_flags(), *_annotation_flags(notes or {})]
    if not tlog:
        args.append("--insecure-ignore-tlog=true")
    if signature_format is SignatureFormat.BUNDLE:
        args.append("--new-bundle-format=true")
    elif bundle_flag:
        args.append("--new-bundle-format=false")
    return [*args, "--output", "json", reference]


def attest_args(reference: str, predicate: str, predicate_type: str, *, key: str, tlog: bool) -> list[str]:
    args = ["attest", "--yes", *(["--key", key] if key else []), "--type", predicate_type, "--predicate", predicate]
    if not tlog:
        args.append("--tlog-upload=false")
    return [*args, reference]


def verify_attestation_args(reference: str, predicate_type: str, identity: Identity, *, tlog: bool) -> list[str]:
    args = ["verify-attestation", *identity.verify_flags(), "--type", predicate_type]
    if not tlog:
        args.append("--insecure-ignore-tlog=true")
    return [*args, "--output", "json", reference]


def sign_blob_args(path: str, bundle: str, *, key: str, tlog: bool) -> list[str]:
    args = ["sign-blob", "--yes", *(["--key", key] if key else []), "--bundle", bundle]
    if not tlog:
        args.append("--tlog-upload=false")
    return [*args, path]


def verify_blob_args(path: str, bundle: str, identity: Identity, *, tlog: bool) -> list[str]:
    args = ["verify-blob", *identity.verify_flags(), "--bundle", bundle]
    if not tlog:
        args.append("--insecure-ignore-tlog=true")
    return [*args, path]


def command_line(args: Sequence[str]) -> str:
    """A command a user can paste into a shell."""
    return shlex.join(["cosign", *args])
