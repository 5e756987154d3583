"""The signing step: sign a published digest, attest it, and read back every write.

Whatever published the image (a build, a merge of per-platform builds, a promotion) hands this step the
digest and the repositories it went to. For each repository, the index and each platform manifest are
signed, then each platform's provenance and SBOM (BuildKit's own, from the index) are attested, one write
after another by this one writer, each verified right after it is written: a silent no-op or a write lost
to a concurrent one fails the step. A digest already signed for this commit by the same key or identity is
not signed again, so a re-run or a reused image writes nothing.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from buildonce.commands.origin import OIDC_VARIABLE, Origin
from buildonce.docker.cosign import Cosign
from buildonce.errors import InputError, RegistryError, SignatureError, SigningError, VerificationError
from buildonce.oci import is_attestation, select_manifest
from buildonce.signing import (
    PREDICATE_TYPES,
    Identity,
    SignatureCheck,
    SignatureFormat,
    Signed,
    SignOptions,
    VerifyMode,
    attest_args,
    command_line,
    decide,
    nothing_to_sign,
    sign_args,
    sign_blob_args,
    signature_notes,
    verify_args,
    verify_attestation_args,
    verify_blob_args,
    workflow_commit,
    workflow_identity_regexp,
)

if TYPE_CHECKING:
    from buildonce.docker.config import Login
    from buildonce.docker.cosign import Result
    from buildonce.github.workflow import Console
    from buildonce.oci import Manifest
    from buildonce.references import ImageName
    from buildonce.retry import RetryPolicy

COSIGN_TIMEOUT = 300.0
ATTESTATION_OF = "vnd.docker.reference.digest"
PREDICATE_OF_LAYER = "in-toto.io/predicate-type"
BUNDLE_SUFFIX = ".sigstore.json"


class CosignAPI(Protocol):
    def run(self, args: Sequence[str], *, timeout: float) -> Result: ...

    def version(self) -> str: ...

    def takes_flag(self, command: str, flag: str) -> bool: ...

    def public_key(self, key: str, directory: Path) -> Path: ...

    def failure(self, what: str, result: Result) -> Exception: ...

    @staticmethod
    def unsigned(result: Result) -> bool: ...


class ManifestReader(Protocol):
    def get_manifest(self, image: ImageName, reference: str) -> Manifest | None: ...


class ManifestsAPI(ManifestReader, Protocol):
    def get_blob(self, image: ImageName, digest: str) -> bytes: ...


@dataclass(frozen=True)
class Target:
    """One manifest to sign: the index itself, or one of its platforms ('' for the index)."""

    image: ImageName
    digest: str
    platform: str = ""

    @property
    def reference(self) -> str:
        return self.image.with_digest(self.digest)


@dataclass(frozen=True)
class Request:
    """What to sign with and what to say: the signer (a key, or keyless), the annotations and the format."""

    signer: Identity
    """The key that signs (a private key reference), or the keyless identity expected of the certificate."""
    notes: dict[str, str]
    commit_note: dict[str, str]
    """The annotation a re-run looks for: this commit's."""
    tlog: bool = True
    signature_format: SignatureFormat = SignatureFormat.LEGACY
    attest: bool = True


@dataclass
class _Run:
    """One signing run: what it signs with, what verifies it, and what it has written so far."""

    request: Request
    check: Identity
    bundle_flag: bool
    result: Signed


@dataclass
class Signer:
    cosign: CosignAPI
    registry: ManifestsAPI
    policy: RetryPolicy
    console: Console
    scratch: Path

    # --- the step ------------------------------------------------------------------------------------
    def sign(self, digest: str, images: Sequence[ImageName], request: Request, reason: str) -> Signed:
        """Sign ``digest`` in every repository of ``images``, then attest each platform; read back each write."""
        result = Signed(signed=True, reason=reason, cosign_version=self.cosign.version())
        check = self._check_identity(request)
        bundle_flag = self.cosign.takes_flag("sign", "--new-bundle-format")
        if request.signature_format is SignatureFormat.BUNDLE and not bundle_flag:
            raise SigningError(
                f"input 'signature-format' is bundle, but cosign {result.cosign_version} cannot write Sigstore "
                "bundles to a registry; use signature-format: legacy, or cosign v3."
            )
        run = _Run(request, check, bundle_flag, result)
        for image in dict.fromkeys(images):
            index, targets = self._targets(image, digest)
            with self.console.group(f"Sign {image.with_digest(digest)} ({len(targets)} manifest(s))"):
                self.policy.call(
                    partial(self._sign_missing, targets, run),
                    f"sign {image.with_digest(digest)}",
                )
                for target in targets:  # read back: every manifest now verifies
                    if not self._verified(target, run):
                        raise VerificationError(
                            f"{target.reference} was signed, but its signature does not verify when read back "
                            "(another writer may have replaced it). Re-run the job."
                        )
                    if request.signature_format is SignatureFormat.LEGACY:
                        result.signature_refs.append(image.with_tag(_tag_of(target.digest, "sig")))
                    else:
                        result.signature_refs.append(f"{target.reference} (referrers)")
                self.console.info(f"Verified the signatures of {len(targets)} manifest(s) of {image}")
            if request.attest and index is not None:
                self._attest(image, index, targets, run)
        first = images[0].with_digest(digest)
        public = "cosign.pub" if not _kms(request.signer.key) else request.signer.key
        shown = Identity(key=public) if request.signer.key else request.signer
        result.verify_command = command_line(
            verify_args(first, shown, tlog=request.tlog, signature_format=request.signature_format)
        )
        return result

    def _check_identity(self, request: Request) -> Identity:
        """What a signature by the signer verifies with: a key's public half, or the keyless identity."""
        if not request.signer.key:
            return request.signer
        if _kms(request.signer.key):
            return request.signer
        return Identity(key=str(self.cosign.public_key(request.signer.key, self.scratch)))

    def _targets(self, image: ImageName, digest: str) -> tuple[dict[str, Any] | None, list[Target]]:
        """The index and each platform manifest it lists (attestation manifests left out)."""
        manifest, _ = self.policy.call(partial(self.registry.get_manifest, image, digest), f"read {image}@{digest}")
        if manifest is None:
            raise VerificationError(f"{image.with_digest(digest)} is not in the registry; nothing to sign.")
        targets = [Target(image, digest)]
        if not manifest.is_index:
            return None, targets
        index = manifest.json()
        for entry in index.get("manifests") or []:
            if isinstance(entry, dict) and "digest" in entry and not is_attestation(entry):
                platform = entry.get("platform") or {}
                name = "/".join(str(platform[k]) for k in ("os", "architecture", "variant") if platform.get(k))
                targets.append(Target(image, str(entry["digest"]), name))
        return index, targets

    def _sign_missing(self, targets: Sequence[Target], run: _Run) -> None:
        """Sign what is not signed for this commit yet; run again after a fault, it signs only what is left."""
        request = run.request
        missing = [target for target in targets if not self._verified(target, run)]
        if not missing:
            self.console.info(f"{targets[0].image}: already signed for this commit; nothing written")
            return
        args = sign_args(
            [target.reference for target in missing],
            key=request.signer.key,
            notes=request.notes,
            tlog=request.tlog,
            signature_format=request.signature_format,
            bundle_flag=run.bundle_flag,
        )
        outcome = self.cosign.run(args, timeout=COSIGN_TIMEOUT)
        if not outcome.ok:
            raise self.cosign.failure(f"sign {missing[0].image}", outcome)
        for target in missing:
            run.result.written.append(f"signature {target.reference}")
            self.console.info(f"Signed {target.reference}" + (f" ({target.platform})" if target.platform else ""))

    def _verified(self, target: Target, run: _Run) -> bool:
        args = verify_args(
            target.reference,
            run.check,
            notes=run.request.commit_note,
            tlog=run.request.tlog,
            signature_format=run.request.signature_format,
            bundle_flag=run.bundle_flag,
        )
        outcome = self.cosign.run(args, timeout=COSIGN_TIMEOUT)
        if outcome.ok:
            return True
        if self.cosign.unsigned(outcome):
            return False
        raise self.cosign.failure(f"verify the signature of {target.reference}", outcome)

    # --- attestations ------------------------------------------------------------------------------------
    def _attest(self, image: ImageName, index: dict[str, Any], targets: Sequence[Target], run: _Run) -> None:
        """Attest each platform's BuildKit provenance and SBOM on that platform's own digest."""
        statements = self._buildkit_statements(image, index)
        for target in targets[1:]:
            for predicate_type, statement in statements.get(target.digest, []):
                kind = PREDICATE_TYPES[predicate_type]
                with self.console.group(f"Attest {kind} of {target.reference} ({target.platform})"):
                    self.policy.call(
                        partial(self._attest_one, target, kind, statement, run),
                        f"attest {kind} of {target.reference}",
                    )
                    if not self._attested(target, kind, run):
                        raise VerificationError(
                            f"the {kind} attestation of {target.reference} does not verify when read back "
                            "(another writer may have replaced it). Re-run the job."
                        )
                    run.result.attestation_refs.append(f"{image.with_tag(_tag_of(target.digest, 'att'))} ({kind})")

    def _attest_one(self, target: Target, kind: str, statement: dict[str, Any], run: _Run) -> None:
        request = run.request
        if self._attested(target, kind, run):
            self.console.info(f"{target.reference}: {kind} already attested; nothing written")
            return
        with tempfile.NamedTemporaryFile(
            "w", suffix=".json", dir=self.scratch, delete=False, encoding="utf-8"
        ) as predicate:
            json.dump(statement.get("predicate", {}), predicate)
        outcome = self.cosign.run(
            attest_args(target.reference, predicate.name, kind, key=request.signer.key, tlog=request.tlog),
            timeout=COSIGN_TIMEOUT,
        )
        if not outcome.ok:
            raise self.cosign.failure(f"attest {kind} of {target.reference}", outcome)
        run.result.written.append(f"{kind} attestation {target.reference}")
        self.console.info(f"Attested {kind} of {target.reference}")

    def _attested(self, target: Target, kind: str, run: _Run) -> bool:
        outcome = self.cosign.run(
            verify_attestation_args(target.reference, kind, run.check, tlog=run.request.tlog), timeout=COSIGN_TIMEOUT
        )
        if outcome.ok:
            return True
        if self.cosign.unsigned(outcome):
            return False
        raise self.cosign.failure(f"verify the {kind} attestation of {target.reference}", outcome)

    def _buildkit_statements(
        self, image: ImageName, index: dict[str, Any]
    ) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        """BuildKit's in-toto statements in the index, by the platform digest each is about."""
        found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for entry in index.get("manifests") or []:
            if not isinstance(entry, dict) or not is_attestation(entry):
                continue
            subject = (entry.get("annotations") or {}).get(ATTESTATION_OF)
            if not subject:
                continue
            manifest, _ = self.policy.call(
                partial(self.registry.get_manifest, image, str(entry["digest"])), f"read attestations of {subject}"
            )
            if manifest is None:
                continue
            for layer in manifest.json().get("layers") or []:
                predicate_type = (layer.get("annotations") or {}).get(PREDICATE_OF_LAYER, "")
                if predicate_type not in PREDICATE_TYPES:
                    continue
                raw, _ = self.policy.call(
                    partial(self.registry.get_blob, image, str(layer["digest"])), f"read {predicate_type} of {subject}"
                )
                found.setdefault(str(subject), []).append((predicate_type, json.loads(raw)))
        return found


def _tag_of(digest: str, suffix: str) -> str:
    return digest.replace(":", "-") + "." + suffix


def _kms(key: str) -> bool:
    """A KMS URI names the same key for signing and verifying; a file or env:// private key does not."""
    return "://" in key and not key.startswith(("env://", "file://"))


# --- verifying before a pull ---------------------------------------------------------------------------------


@dataclass
class SignatureVerifier:
    """Refuses an image or artifact unless it is signed by the key or identity a consumer requires."""

    cosign: CosignAPI
    check: SignatureCheck
    identity: Identity
    policy: RetryPolicy
    console: Console

    def image(self, image: ImageName, digests: Sequence[str], found_as: str) -> None:
        """Every digest (the one that will be pulled, and its index) must verify; else nothing is pulled."""
        for digest in dict.fromkeys(digests):
            reference = image.with_digest(digest)
            args = verify_args(reference, self.identity, tlog=self.check.tlog)

            def run(reference: str = reference, args: list[str] = args) -> Result:
                outcome = self.cosign.run(args, timeout=COSIGN_TIMEOUT)
                if not outcome.ok and not self.cosign.unsigned(outcome):
                    failure = self.cosign.failure(f"verify {reference}", outcome)
                    if isinstance(failure, RegistryError):
                        raise failure
                return outcome

            outcome, _ = self.policy.call(run, f"verify the signature of {reference}")
            if not outcome.ok:
                raise SignatureError(
                    f"{reference} ({found_as}) is not signed by {self.identity.describe()}: {outcome.message}. "
                    "Nothing was pulled. Was it signed by the build of this commit (sign, sign-key), and is "
                    "verify-key or the expected identity the one it was signed with?"
                )
            self.console.info(f"Signature verified: {reference} by {self.identity.describe()}")

    def blob(self, path: Path) -> None:
        bundle = path.with_name(path.name + BUNDLE_SUFFIX)
        if not bundle.is_file():
            raise SignatureError(
                f"the artifact {path} has no signature bundle ({bundle.name}) beside it; nothing was loaded. "
                "Was it saved by a build with signing on, and was the bundle uploaded with it?"
            )
        outcome = self.cosign.run(
            verify_blob_args(str(path), str(bundle), self.identity, tlog=self.check.tlog), timeout=COSIGN_TIMEOUT
        )
        if not outcome.ok:
            raise SignatureError(
                f"the artifact {path} is not signed by {self.identity.describe()}: {outcome.message}. "
                "Nothing was loaded."
            )
        self.console.info(f"Signature verified: {path.name} by {self.identity.describe()}")


def sign_blob(cosign: CosignAPI, path: Path, signer: Identity, *, tlog: bool) -> Path:
    """Sign an artifact tar; the bundle sits beside it (and its ``.sha256``), to be uploaded with it."""
    bundle = path.with_name(path.name + BUNDLE_SUFFIX)
    outcome = cosign.run(sign_blob_args(str(path), str(bundle), key=signer.key, tlog=tlog), timeout=COSIGN_TIMEOUT)
    if not outcome.ok:
        raise cosign.failure(f"sign the artifact {path.name}", outcome)
    return bundle


# --- the step as build (and merge) call it ---------------------------------------------------------------


def signer_of(options: SignOptions, origin: Origin, keyless: bool) -> Identity:
    if not keyless:
        return Identity(key=options.key)
    return Identity(
        identity_regexp=workflow_identity_regexp(origin.server_url, origin.repository),
        workflow_sha=origin.workflow_sha,
    )


def sign_published(
    env: Mapping[str, str],
    console: Console,
    policy: RetryPolicy,
    registry: ManifestsAPI,
    *,
    options: SignOptions,
    origin: Origin,
    digest: str,
    images: Sequence[ImageName],
    artifact: Path | None = None,
    cosign: CosignAPI | None = None,
    login: Login | None = None,
) -> Signed:
    """Sign a published digest in every repository it went to (and the artifact tar, when there is one), or
    say why not. ``cosign`` is for the tests; by default the one on PATH."""
    oidc = bool(env.get(OIDC_VARIABLE))
    subject = images[0].name if images else ""
    unsigned = nothing_to_sign(
        options, pushed=bool(digest), fork=origin.fork, oidc=oidc, artifact=artifact is not None, subject=subject
    )
    if unsigned is not None:
        return unsigned
    decision = decide(options, pushed=bool(digest), fork=origin.fork, oidc=oidc)
    blob = decide(options, pushed=True, fork=origin.fork, oidc=oidc)
    password = env.get("COSIGN_PASSWORD", "")
    if password:
        console.mask(password)
    tool = cosign or Cosign.find(env, console.redact, login)
    notes = signature_notes(origin.namespace, origin.sha, origin.run_url)
    commit_note = {f"{origin.namespace}.commit": origin.sha}
    with tempfile.TemporaryDirectory(prefix="buildonce-sign-", dir=env.get("RUNNER_TEMP") or None) as scratch:
        signer = Signer(tool, registry, policy, console, Path(scratch))
        if decision.sign:
            request = Request(
                signer_of(options, origin, decision.keyless), notes, commit_note, options.tlog, options.format
            )
            result = signer.sign(digest, images, request, decision.reason)
        else:
            result = Signed(reason=decision.reason, cosign_version=tool.version())
        if artifact is not None and blob.sign:
            bundle = sign_blob(tool, artifact, signer_of(options, origin, blob.keyless), tlog=options.tlog)
            result.written.append(f"artifact bundle {bundle.name}")
            console.info(f"Signed the artifact: {bundle}")
    result.subject_name = subject
    return result


def digests_to_verify(
    registry: ManifestReader, policy: RetryPolicy, image: ImageName, digest: str, platform: str
) -> list[str]:
    """The digest the engine will pull for ``platform`` and, for an index, the index itself."""
    manifest, _ = policy.call(partial(registry.get_manifest, image, digest), f"read {image}@{digest}")
    if manifest is None or not manifest.is_index:
        return [digest]
    entry = select_manifest(manifest.json(), platform)
    if entry is None:
        raise SignatureError(f"{image.with_digest(digest)} has no image for {platform}; nothing was pulled.")
    return [str(entry["digest"]), digest]


def every_digest(registry: ManifestReader, policy: RetryPolicy, image: ImageName, digest: str) -> list[str]:
    """The digest and, for an index, each platform manifest it lists: all a consumer may pull."""
    manifest, _ = policy.call(partial(registry.get_manifest, image, digest), f"read {image}@{digest}")
    if manifest is None or not manifest.is_index:
        return [digest]
    entries = [entry for entry in manifest.json().get("manifests") or [] if isinstance(entry, dict)]
    return [digest, *(str(entry["digest"]) for entry in entries if "digest" in entry and not is_attestation(entry))]


def signature_verifier(
    check: SignatureCheck,
    env: Mapping[str, str],
    console: Console,
    policy: RetryPolicy,
    *,
    sha: str,
    login: Login | None = None,
) -> SignatureVerifier | None:
    """The verifier a consumer's inputs ask for, or None; keyless expects this repository's workflows, at the
    commit the signing run's workflow ran at (``workflow_commit``)."""
    if not check.on:
        return None
    repository = env.get("GITHUB_REPOSITORY", "")
    if check.mode is VerifyMode.KEYLESS and not (check.identity_regexp or repository):
        raise InputError(
            "input 'verify-signature' is keyless, but nothing names the repository whose workflows must have "
            "signed: set certificate-identity-regexp (or run in GitHub Actions, which sets GITHUB_REPOSITORY)."
        )
    workflow_sha = workflow_commit(env.get("GITHUB_EVENT_NAME", ""), env.get("GITHUB_SHA", ""), sha)
    identity = check.identity(
        server_url=env.get("GITHUB_SERVER_URL", "https://github.com"), repository=repository, sha=workflow_sha
    )
    return SignatureVerifier(Cosign.find(env, console.redact, login), check, identity, policy, console)
