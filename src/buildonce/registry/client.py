"""A client for the OCI Distribution HTTP API: look up, read, re-tag and push images.

Each method makes one attempt and turns any failure into a ``RegistryError`` that says whether it is worth
trying again; the retry policy lives with the caller (``buildonce.retry``). So that a retry is always safe,
every operation is idempotent: lookups only read, manifests are PUT whole, and a push skips the blobs the
registry already has. Each operation, all its requests and token fetches together, ends by one deadline
(``timeout`` seconds), however slowly the registry answers.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit

from buildonce.docker.config import (
    DOCKER_HUB_API,
    ConfigError,
    Credentials,
    normalize_registry,
    stored_credentials,
)
from buildonce.docker.config import (
    TOKEN_USERNAME as _TOKEN_USERNAME,
)
from buildonce.errors import RegistryError
from buildonce.oci import (
    MANIFEST_ACCEPT,
    Manifest,
    declared_media_type,
    json_object,
    platforms_of,
    select_manifest,
    sha256_digest,
)
from buildonce.references import DIGEST_PATTERN, DOCKER_HUB, ImageName, Reference
from buildonce.registry import http as transport
from buildonce.registry.auth import Challenge, parse_challenge, scope
from buildonce.registry.http import error_codes, parse_retry_after, registry_said

if TYPE_CHECKING:
    # Imported where an image is pushed or copied: a consumer only reads manifests and configs.
    from buildonce.layout import LayoutBlob

SMALL_BLOB = 1 << 20
"""Blobs up to this size are read into memory and sent in one PUT; larger ones are streamed from the file."""

MAX_TAG_PAGES = 10_000
"""A bound on the pages of a tag list: a registry that links back to a page cannot loop a run forever."""

_DIGEST_ANY = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")
_OPENSSL_REASON = re.compile(r"\[SSL(?:: [A-Z0-9_]+)?\] ([^(]+?)\s*\(_ssl")
_TLS_CUT = ("eof", "connection reset", "connection aborted")
_REASONS = (
    "Remote end closed connection",
    "Connection aborted",
    "Connection reset",
    "Connection refused",
    "Connection broken",
)


# --- pure helpers -----------------------------------------------------------------------------------------


def api_host(registry: str) -> str:
    """The host that serves the API; Docker Hub's names say docker.io but its API is elsewhere."""
    return DOCKER_HUB_API if normalize_registry(registry) == DOCKER_HUB else registry


def base_url(registry: str) -> str:
    # HTTPS first, for every registry, as Docker does; a loopback one that answers in plain HTTP is asked again
    # over plain HTTP (``Registry._request``).
    return f"https://{api_host(registry)}"


def describe(image: ImageName, reference: str) -> str:
    return image.with_digest(reference) if _DIGEST_ANY.fullmatch(reference) else image.with_tag(reference)


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join(part for part in (parts.query, urlencode(params)) if part)
    return parts._replace(query=query).geturl()


def _reason(exc: BaseException) -> str:
    """The useful end of a transport error's text: the socket's words (``Connection refused``) or its kind."""
    text = str(exc)
    found = _ERRNO.search(text)
    if found:
        return found.group(1).strip()
    for reason in _REASONS:
        if reason.lower() in text.lower():
            return reason
    return type(exc).__name__


def _tls_reason(exc: BaseException) -> str:
    """OpenSSL's words from a TLS error, e.g. ``certificate verify failed: self-signed certificate``."""
    found = _OPENSSL_REASON.search(str(exc))
    return found.group(1).strip() if found else _reason(exc)


def _without_query(url: str) -> str:
    return urlsplit(url)._replace(query="", fragment="").geturl()


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _operation(method: Callable[Concatenate[Registry, _P], _R]) -> Callable[Concatenate[Registry, _P], _R]:
    """Make a method one registry operation: every request it makes shares one deadline."""

    @functools.wraps(method)
    def bounded(self: Registry, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self.operation():
            return method(self, *args, **kwargs)

    return bounded


# --- the client ---------------------------------------------------------------------------------------------


class Registry:
    """One HTTP session to any number of registries, with their credentials and tokens."""

    def __init__(
        self,
        *,
        logins: Mapping[str, Credentials] | None = None,
        docker_config: Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._logins = {normalize_registry(host): login for host, login in (logins or {}).items()}
        # No config directory means explicit logins only; callers pass docker_config_dir(env).
        self._docker_config = docker_config
        self._timeout = timeout
        self._session = transport.session()
        self._session.headers["User-Agent"] = "buildonce"
        self._local = threading.local()
        self._insecure: dict[str, bool] = {}
        self._plain: set[str] = set()
        """Hosts Docker treats as insecure by default that answered HTTPS in plain HTTP: asked in plain HTTP."""
        self._config_logins: dict[str, Credentials | None] = {}
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, tuple[str, ...]], str] = {}
        self._secrets: set[str] = set()
        for login in self._logins.values():
            self._remember_secret(login)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def operation(self) -> Iterator[None]:
        """One registry operation: every request inside, token fetches included, ends ``timeout`` seconds from
        now at the latest. An operation inside another keeps the outer one's deadline; a request outside any
        operation is one by itself."""
        if getattr(self._local, "deadline", None) is not None:
            yield
            return
        self._local.deadline = time.monotonic() + self._timeout
        try:
            yield
        finally:
            self._local.deadline = None

    def _deadline(self) -> float:
        deadline: float | None = getattr(self._local, "deadline", None)
        return deadline if deadline is not None else time.monotonic() + self._timeout

    # --- lookups ------------------------------------------------------------------------------------------
    @_operation
    def resolve(self, image: ImageName, reference: str) -> str | None:
        """The manifest digest a tag (or digest) points to; None if the tag or repository does not exist."""
        what = f"look up {describe(image, reference)}"
        response = self._lookup("HEAD", image, f"/manifests/{reference}", what, {"Accept": MANIFEST_ACCEPT})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._http_error(response, what, image, "pull")
        digest = response.headers.get("Docker-Content-Digest", "")
        if _DIGEST_ANY.fullmatch(digest):
            return digest
        # Some registries leave the header off a HEAD; a manifest's digest is the hash of its bytes anyway.
        manifest = self.get_manifest(image, reference)
        return manifest.digest if manifest else None

    @_operation
    def get_manifest(self, image: ImageName, reference: str) -> Manifest | None:
        what = f"read the manifest of {describe(image, reference)}"
        response = self._lookup("GET", image, f"/manifests/{reference}", what, {"Accept": MANIFEST_ACCEPT})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._http_error(response, what, image, "pull")
        raw = response.content
        header_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        manifest = Manifest.from_bytes(raw, declared_media_type(raw) or header_type or None)
        if DIGEST_PATTERN.fullmatch(reference) and manifest.digest != reference:
            raise self._error(f"{what}: {image.registry} served a manifest that hashes to {manifest.digest}.")
        return manifest

    @_operation
    def image_config(self, image: ImageName, reference: str, platform: str | None = None) -> dict[str, Any] | None:
        """The image config (labels, env, …) of a tag or digest; of one platform's image for an index."""
        manifest = self.get_manifest(image, reference)
        if manifest is None:
            return None
        body = self._manifest_json(manifest, image, reference)
        if manifest.is_index or "manifests" in body:
            body = self._platform_manifest(image, reference, body, platform)
        config = body.get("config")
        if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
            raise self._error(f"{describe(image, reference)} is not an image: its manifest names no config blob.")
        data = json_object(self._get_blob(image, config["digest"], reference))
        if not data:
            raise self._error(f"{describe(image, reference)}: its config blob {config['digest']} is not a JSON object.")
        return data

    @_operation
    def labels(self, image: ImageName, reference: str) -> dict[str, str] | None:
        """The image's labels (empty when it has none); None when the tag or repository does not exist."""
        config = self.image_config(image, reference)
        if config is None:
            return None
        settings = config.get("config")
        found = settings.get("Labels") if isinstance(settings, dict) else None
        return {str(key): str(value) for key, value in found.items()} if isinstance(found, dict) else {}

    @_operation
    def list_tags(self, image: ImageName, page_size: int = 1000) -> list[str]:
        """Every tag of the repository, following the ``Link`` header page by page; empty when it does not
        exist."""
        what = f"list the tags of {image}"
        url = f"/v2/{image.repository}/tags/list?" + urlencode({"n": str(page_size)})
        found: list[str] = []
        for _ in range(MAX_TAG_PAGES):
            response = self._send("GET", image.registry, url, (scope(image, "pull"),), what)
            if response.status_code == 404:
                return found
            if response.status_code != 200:
                raise self._http_error(response, what, image, "pull")
            tags = json_object(response.content).get("tags")
            found += [tag for tag in tags or [] if isinstance(tag, str)] if isinstance(tags, list) else []
            following = response.links.get("next", {}).get("url")
            if not following:
                return list(dict.fromkeys(found))
            url = urljoin(response.url, following)
            if not self._ours(url, image.registry):
                raise self._error(
                    f"{what}: {image.registry} sent the next page to another host ({_without_query(url)})."
                )
        raise self._error(f"{what}: {image.registry} sent more than {MAX_TAG_PAGES} pages of tags.")

    @_operation
    def referrers(self, image: ImageName, digest: str) -> list[dict[str, Any]] | None:
        """The descriptors the OCI referrers API lists for ``digest``; None when the registry does not offer
        the API (it answers 404 or 405 without an image index)."""
        what = f"list the referrers of {describe(image, digest)}"
        accept = {"Accept": "application/vnd.oci.image.index.v1+json"}
        response = self._lookup("GET", image, f"/referrers/{digest}", what, accept)
        if response.status_code in (400, 404, 405):
            return None
        if response.status_code != 200:
            raise self._http_error(response, what, image, "pull")
        body = json_object(response.content)
        entries = body.get("manifests")
        if not isinstance(entries, list):
            return None
        return [entry for entry in entries if isinstance(entry, dict) and isinstance(entry.get("digest"), str)]

    # --- writes ---------------------------------------------------------------------------------------------
    @_operation
    def put_manifest(self, image: ImageName, tag: str, manifest: Manifest) -> str:
        """Store ``manifest`` under ``tag`` (or its digest); returns the digest the registry reports."""
        what = f"push the manifest {describe(image, tag)}"
        response = self._send(
            "PUT",
            image.registry,
            f"/v2/{image.repository}/manifests/{tag}",
            (scope(image, "pull,push"),),
            what,
            headers={"Content-Type": manifest.media_type},
            body=manifest.raw,
        )
        if response.status_code not in (200, 201, 202):
            raise self._http_error(response, what, image, "push")
        digest = response.headers.get("Docker-Content-Digest", "")
        return digest if _DIGEST_ANY.fullmatch(digest) else manifest.digest

    @_operation
    def delete_manifest(self, image: ImageName, reference: str) -> bool:
        """DELETE a manifest by digest (or a tag, where the registry allows it); False when it was already
        gone (404), which counts as done."""
        what = f"delete {describe(image, reference)}"
        path = f"/v2/{image.repository}/manifests/{reference}"
        response = self._send("DELETE", image.registry, path, (scope(image, "delete"),), what)
        if response.status_code in (200, 202, 204):
            return True
        if response.status_code == 404:
            return False
        if response.status_code == 405 or "UNSUPPORTED" in error_codes(response.content):
            said = registry_said(response.content, response.headers.get("Content-Type", ""))
            raise self._error(
                f"{what}: {image.registry} does not allow deleting manifests (HTTP {response.status_code})"
                + (f"; it said: {said}" if said else "")
                + ". Enable deletes (Distribution: REGISTRY_STORAGE_DELETE_ENABLED=true; GHCR: use the GitHub "
                "Packages API, backend: ghcr)."
            )
        raise self._http_error(response, what, image, "delete")

    @_operation
    def push_layout(self, layout: Path, references: Sequence[Reference]) -> str:
        """Push the image of an OCI layout directory to every reference; returns its digest.

        Per repository: the blobs it lacks, then the manifests below the top one by digest, then the top
        one under each tag, so that no tag ever points at something incomplete.
        """
        if not references:
            raise ValueError("push_layout needs at least one reference")
        from buildonce.layout import read_layout

        image = read_layout(layout)
        by_repository: dict[tuple[str, str], list[Reference]] = {}
        for ref in references:
            by_repository.setdefault((normalize_registry(ref.image.registry), ref.image.repository), []).append(ref)
        # A blob already in one repository of a registry can be mounted into another instead of uploaded.
        pushed_to: dict[str, ImageName] = {}
        for (registry, _), refs in by_repository.items():
            target = refs[0].image
            self._push_blobs(target, image.blobs, pushed_to.get(registry))
            for child in image.children:
                self._put_checked(target, child.digest, child)
            for ref in refs:
                self._put_checked(target, ref.tag, image.top)
            pushed_to.setdefault(registry, target)
        return image.top.digest

    @_operation
    def push_by_digest(self, layout: Path, targets: Sequence[ImageName], digests: Sequence[str]) -> int:
        """Push the manifests ``digests`` of an OCI layout, and all they refer to, into every repository of
        ``targets`` by digest alone: no tag, and never the layout's top-level index. What a repository already
        holds is left as it is; returns how many blobs and manifests were written.
        """
        from buildonce.layout import read_layout

        image = read_layout(layout)
        wanted = set(digests)
        by_digest = {manifest.digest: manifest for manifest in (*image.children, image.top)}
        unknown = sorted(wanted - set(by_digest))
        if unknown:
            raise ValueError(f"{layout} holds no manifest {', '.join(unknown)}")
        written = 0
        pushed_to: dict[str, ImageName] = {}
        for target in dict.fromkeys(targets):
            registry = normalize_registry(target.registry)
            mount_from = pushed_to.get(registry)
            scopes: tuple[str, ...] = (scope(target, "pull,push"),)
            if mount_from is not None:
                scopes = (*scopes, scope(mount_from, "pull"))
            for blob in image.blobs:
                if self._has_blob(target, blob, scopes):
                    continue
                location = self._start_upload(target, blob, mount_from, scopes)
                if location is not None:
                    self._finish_upload(target, blob, location, scopes)
                written += 1
            for manifest in (*image.children, image.top):
                if manifest.digest in wanted and self.resolve(target, manifest.digest) != manifest.digest:
                    self._put_checked(target, manifest.digest, manifest)
                    written += 1
            pushed_to.setdefault(registry, target)
        return written

    @_operation
    def copy_image(self, source: ImageName, digest: str, target: ImageName) -> None:
        """Copy ``source@digest`` into ``target`` by digest, no tag: every blob it lacks (mounted within one
        registry, else downloaded and uploaded), then the manifests below the top one, then the top one."""
        top = self.get_manifest(source, digest)
        if top is None:
            raise self._error(f"copy {describe(source, digest)}: {source.registry} does not have it.")
        manifests: list[Manifest] = []
        blobs: dict[str, int] = {}
        self._collect(source, top, manifests, blobs)
        same_registry = normalize_registry(source.registry) == normalize_registry(target.registry)
        scopes: tuple[str, ...] = (scope(target, "pull,push"), scope(source, "pull"))
        import tempfile

        from buildonce.layout import LayoutBlob

        with tempfile.TemporaryDirectory(prefix="buildonce-copy-") as scratch:
            for blob_digest, size in blobs.items():
                blob = LayoutBlob(blob_digest, size, Path(scratch) / blob_digest.replace(":", "-"))
                if self._has_blob(target, blob, scopes):
                    continue
                if same_registry and self._start_upload(target, blob, source, scopes) is None:
                    continue  # mounted
                self._download_blob(source, blob)
                location = self._start_upload(target, blob, None, scopes)
                if location is not None:
                    self._finish_upload(target, blob, location, scopes)
                blob.path.unlink()
        for manifest in manifests:
            self._put_checked(target, manifest.digest, manifest)

    @_operation
    def get_blob(self, image: ImageName, digest: str) -> bytes:
        """A blob's exact bytes, checked against its digest (a config, an attestation's in-toto statement)."""
        return self._get_blob(image, digest, digest)

    @_operation
    def push_blob(self, image: ImageName, data: bytes) -> str:
        """Store ``data`` as a blob of ``image`` unless the repository has it already; returns its digest."""
        digest = sha256_digest(data)
        scopes: tuple[str, ...] = (scope(image, "pull,push"),)
        import tempfile

        from buildonce.layout import LayoutBlob

        with tempfile.TemporaryDirectory(prefix="buildonce-blob-") as scratch:
            blob = LayoutBlob(digest, len(data), Path(scratch) / "blob")
            blob.path.write_bytes(data)
            if not self._has_blob(image, blob, scopes):
                location = self._start_upload(image, blob, None, scopes)
                if location is not None:
                    self._finish_upload(image, blob, location, scopes)
        return digest

    def _collect(self, image: ImageName, manifest: Manifest, manifests: list[Manifest], blobs: dict[str, int]) -> None:
        """The manifests below and including ``manifest``, each after those it refers to, and their blobs."""
        body = self._manifest_json(manifest, image, manifest.digest)
        for entry in body.get("manifests") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
                continue
            child = self.get_manifest(image, entry["digest"])
            if child is None:
                raise self._error(f"{describe(image, manifest.digest)} lists {entry['digest']}, which is missing.")
            self._collect(image, child, manifests, blobs)
        for entry in [body.get("config"), *(body.get("layers") or [])]:
            if isinstance(entry, dict) and isinstance(entry.get("digest"), str):
                blobs[entry["digest"]] = int(entry.get("size") or 0)
        if manifest.digest not in {m.digest for m in manifests}:
            manifests.append(manifest)

    def _download_blob(self, image: ImageName, blob: LayoutBlob) -> None:
        what = f"read blob {blob.digest} of {image}"
        path = f"/v2/{image.repository}/blobs/{blob.digest}"
        response = self._send("GET", image.registry, path, (scope(image, "pull"),), what)
        if response.status_code != 200:
            raise self._http_error(response, what, image, "pull")
        blob.path.write_bytes(response.content)
        if sha256_digest(response.content) != blob.digest:
            raise self._error(f"{what}: {image.registry} served content that does not match the digest.")

    # --- pushing, step by step ------------------------------------------------------------------------------
    def _put_checked(self, image: ImageName, reference: str, manifest: Manifest) -> None:
        stored = self.put_manifest(image, reference, manifest)
        if stored != manifest.digest:
            raise self._error(
                f"push the manifest {describe(image, reference)}: {image.registry} stored it as {stored}, not "
                f"{manifest.digest}; the registry rewrote the manifest, so its digest cannot be kept."
            )

    def _push_blobs(self, target: ImageName, blobs: Sequence[LayoutBlob], mount_from: ImageName | None) -> None:
        scopes: tuple[str, ...] = (scope(target, "pull,push"),)
        if mount_from is not None:
            scopes = (*scopes, scope(mount_from, "pull"))
        for blob in blobs:
            if self._has_blob(target, blob, scopes):
                continue
            location = self._start_upload(target, blob, mount_from, scopes)
            if location is not None:
                self._finish_upload(target, blob, location, scopes)

    def _has_blob(self, target: ImageName, blob: LayoutBlob, scopes: tuple[str, ...]) -> bool:
        what = f"check for blob {blob.digest} in {target}"
        response = self._send("HEAD", target.registry, f"/v2/{target.repository}/blobs/{blob.digest}", scopes, what)
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._http_error(response, what, target, "pull")

    def _start_upload(
        self, target: ImageName, blob: LayoutBlob, mount_from: ImageName | None, scopes: tuple[str, ...]
    ) -> str | None:
        """Open an upload session; None when the registry mounted the blob from ``mount_from`` instead."""
        path = f"/v2/{target.repository}/blobs/uploads/"
        if mount_from is not None:
            path += "?" + urlencode({"mount": blob.digest, "from": mount_from.repository})
        what = f"upload blob {blob.digest} to {target}"
        response = self._send("POST", target.registry, path, scopes, what)
        if response.status_code == 201 and mount_from is not None:
            return None
        location = response.headers.get("Location")
        if response.status_code != 202 or not location:
            raise self._http_error(response, what, target, "push")
        return urljoin(response.url, location)

    def _finish_upload(self, target: ImageName, blob: LayoutBlob, location: str, scopes: tuple[str, ...]) -> None:
        # One PUT with the whole blob; above SMALL_BLOB it streams from the file, so a multi-gigabyte layer
        # never sits in memory. (BuildKit pushes the same way; every common registry accepts it.)
        body: bytes | Path = blob.path.read_bytes() if blob.size <= SMALL_BLOB else blob.path
        what = f"upload blob {blob.digest} to {target}"
        response = self._send(
            "PUT",
            target.registry,
            _with_query(location, digest=blob.digest),
            scopes,
            what,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)},
            body=body,
        )
        if not 200 <= response.status_code < 300:
            raise self._http_error(response, what, target, "push")

    # --- reading helpers ------------------------------------------------------------------------------------
    def _lookup(
        self, method: str, image: ImageName, suffix: str, what: str, headers: Mapping[str, str]
    ) -> transport.Response:
        path = f"/v2/{image.repository}{suffix}"
        response = self._send(method, image.registry, path, (scope(image, "pull"),), what, headers=headers)
        if response.status_code == 401 and self._bearer_with_login(image.registry):
            # Docker Hub answers a pull token for a repository that does not exist yet with 401, not 404: it
            # will not say whether someone else's private repository exists. With push scope on one's own
            # namespace it grants the token, and the lookup gets the 404 that means "not pushed yet".
            response = self._send(method, image.registry, path, (scope(image, "pull,push"),), what, headers=headers)
        return response

    def _bearer_with_login(self, registry: str) -> bool:
        challenge = self._challenges.get(registry)
        return challenge is not None and challenge.scheme == "bearer" and self._credentials(registry) is not None

    def _platform_manifest(
        self, image: ImageName, reference: str, index: Mapping[str, Any], platform: str | None
    ) -> dict[str, Any]:
        entry = select_manifest(index, platform)
        name = describe(image, reference)
        if entry is None:
            listed = ", ".join(platforms_of(index)) or "none"
            raise self._error(f"{name} has no image for {platform or 'any platform'} (it has: {listed}).")
        child = self.get_manifest(image, entry["digest"])
        if child is None:
            # Transient: an image another job is pushing right now can list a child it has not written yet.
            raise self._error(f"{name} lists {entry['digest']}, which {image.registry} does not have.", transient=True)
        return self._manifest_json(child, image, reference)

    def _get_blob(self, image: ImageName, digest: str, reference: str) -> bytes:
        what = f"read blob {digest} of {describe(image, reference)}"
        path = f"/v2/{image.repository}/blobs/{digest}"
        response = self._send("GET", image.registry, path, (scope(image, "pull"),), what)
        if response.status_code != 200:
            raise self._http_error(response, what, image, "pull")
        if DIGEST_PATTERN.fullmatch(digest) and sha256_digest(response.content) != digest:
            raise self._error(f"{what}: {image.registry} served content that does not match the digest.")
        return response.content

    def _manifest_json(self, manifest: Manifest, image: ImageName, reference: str) -> dict[str, Any]:
        try:
            return manifest.json()
        except (ValueError, TypeError):
            raise self._error(
                f"{describe(image, reference)}: {image.registry} served {manifest.digest}, which is not JSON."
            ) from None

    # --- HTTP and auth --------------------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        registry: str,
        path_or_url: str,
        scopes: tuple[str, ...],
        what: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | Path | None = None,
    ) -> transport.Response:
        """One request, and once more after a 401 that says how to authenticate (anonymous at first)."""
        url = path_or_url if "://" in path_or_url else base_url(registry) + path_or_url
        known = self._challenges.get(registry)
        response = self._attempt(method, url, registry=registry, scopes=scopes, what=what, headers=headers, body=body)
        if response.status_code != 401 or not self._ours(url, registry):
            return response
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            return response
        if challenge.scheme == "basic" and (known == challenge or self._credentials(registry) is None):
            return response  # the credentials were sent and refused, or there are none to send
        self._challenges[registry] = challenge
        if challenge.scheme == "bearer":
            self._tokens[(registry, scopes)] = self._fetch_token(registry, challenge, scopes, what)
        response.close()
        return self._attempt(method, url, registry=registry, scopes=scopes, what=what, headers=headers, body=body)

    def _attempt(
        self,
        method: str,
        url: str,
        *,
        registry: str,
        scopes: tuple[str, ...],
        what: str,
        headers: Mapping[str, str] | None,
        body: bytes | Path | None,
    ) -> transport.Response:
        sent = {**(headers or {}), **self._authorization(url, registry, scopes, what)}
        return self._request(method, url, what=what, registry=registry, headers=sent, body=body)

    def _request(
        self, method: str, url: str, *, what: str, registry: str, body: bytes | Path | None = None, **kwargs: Any
    ) -> transport.Response:
        """One HTTP request within the operation's deadline; any failure becomes a classified RegistryError.

        As Docker does, a registry it treats as insecure by default (loopback) is asked over HTTPS first, its
        certificate unchecked, and again over plain HTTP when TLS fails; once plain HTTP has answered, that host
        is asked in plain HTTP from the start.
        """
        deadline = self._deadline()
        url = self._with_known_scheme(url)
        try:
            return self._exchange(method, url, deadline, body, kwargs)
        except (transport.DeadlineError, transport.TransportError) as exc:
            plain = self._fallback_for(url, exc)
            if plain is None:
                raise self._transport_error(exc, what, registry, url, deadline) from exc
        try:
            response = self._exchange(method, plain, deadline, body, kwargs)
        except (transport.DeadlineError, transport.TransportError) as exc:
            raise self._transport_error(exc, what, registry, plain, deadline) from exc
        self._plain.add(urlsplit(plain).netloc.lower())
        return response

    def _exchange(
        self, method: str, url: str, deadline: float, body: bytes | Path | None, kwargs: Mapping[str, Any]
    ) -> transport.Response:
        options = dict(kwargs)
        with contextlib.ExitStack() as stack:
            if url.startswith("https://") and self._is_insecure(urlsplit(url).netloc):
                options["verify"] = False  # as Docker, for a registry it treats as insecure
                options["connect_seconds"] = transport.TLS_HANDSHAKE_SECONDS
            if isinstance(body, Path):
                options["data"] = stack.enter_context(body.open("rb"))
            elif body is not None:
                options["data"] = body
            return transport.bounded_request(self._session, method, url, deadline, **options)

    def _is_insecure(self, netloc: str) -> bool:
        key = netloc.lower()
        if key not in self._insecure:
            self._insecure[key] = normalize_registry(key) != DOCKER_HUB and transport.insecure_by_default(key)
        return self._insecure[key]

    def _with_known_scheme(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme == "https" and parts.netloc.lower() in self._plain:
            return parts._replace(scheme="http").geturl()
        return url

    def _fallback_for(self, url: str, exc: BaseException) -> str | None:
        """The plain-HTTP URL to ask when ``url`` failed as an HTTPS request to a plain-HTTP registry Docker
        treats as insecure fails: at the TLS level (an error, or no handshake in time, as containerd allows) or,
        with no port named, refused on 443 (a registry on 80)."""
        parts = urlsplit(url)
        if parts.scheme != "https" or not self._is_insecure(parts.netloc):
            return None
        refused = isinstance(exc, transport.ConnectError) and "refused" in str(exc).lower()
        no_port = transport.split_host(parts.netloc)[1] is None
        if isinstance(exc, (transport.TLSError, transport.ConnectTimeoutError)) or (refused and no_port):
            return parts._replace(scheme="http").geturl()
        return None

    def _ours(self, url: str, registry: str) -> bool:
        """Whether ``url`` is on the registry's API host: credentials are never sent anywhere else."""
        return urlsplit(url).netloc.lower() == api_host(registry).lower()

    def _authorization(self, url: str, registry: str, scopes: tuple[str, ...], what: str) -> dict[str, str]:
        challenge = self._challenges.get(registry)
        if challenge is None or not self._ours(url, registry):
            return {}
        if challenge.scheme == "basic":
            login = self._credentials(registry)
            return {"Authorization": self._basic(login)} if login else {}
        token = self._tokens.get((registry, scopes))
        if token is None:
            # The host's challenge is known, so a token for a new scope is fetched up front: a 401 halfway
            # through a streamed upload would cost the whole upload.
            token = self._tokens[(registry, scopes)] = self._fetch_token(registry, challenge, scopes, what)
        return {"Authorization": f"Bearer {token}"}

    def _basic(self, login: Credentials) -> str:
        encoded = base64.b64encode(f"{login.username}:{login.password}".encode()).decode("ascii")
        self._secrets.add(encoded)
        return f"Basic {encoded}"

    def _fetch_token(self, registry: str, challenge: Challenge, scopes: tuple[str, ...], what: str) -> str:
        realm = challenge.params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise self._error(f"{what}: {registry} asked for a bearer token but named no usable realm ({realm!r}).")
        service = challenge.params.get("service")
        login = self._credentials(registry)
        asked = f"{what} (token from {urlsplit(realm).netloc})"
        if login is not None and login.username == _TOKEN_USERNAME:
            response = self._refresh_token(realm, service, scopes, login.password, what=asked, registry=registry)
        else:
            params = [("service", service)] if service else []
            params += [("scope", scope) for scope in scopes]
            auth = (login.username, login.password) if login else None
            response = self._request("GET", realm, what=asked, registry=registry, params=params, auth=auth)
        if response.status_code != 200:
            raise self._http_error(response, asked, None, "pull", registry)
        try:
            data = response.json()
        except ValueError:
            data = None
        token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise self._error(f"{what}: the token service of {registry} answered without a token.")
        self._secrets.add(token)
        return token

    def _refresh_token(
        self, realm: str, service: str | None, scopes: tuple[str, ...], refresh: str, *, what: str, registry: str
    ) -> transport.Response:
        # An identity token (what `docker login` stores for some registries, e.g. ACR) is an OAuth2
        # refresh token: it is exchanged by POST, as the docker CLI does, instead of sent as a password.
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "client_id": "buildonce",
            "scope": " ".join(scopes),
        }
        if service:
            form["service"] = service
        return self._request("POST", realm, what=what, registry=registry, data=form)

    # --- credentials ----------------------------------------------------------------------------------------
    def _credentials(self, registry: str) -> Credentials | None:
        key = normalize_registry(registry)
        if key in self._logins:
            return self._logins[key]
        if key not in self._config_logins:
            login = self._from_docker_config(key)
            if login is not None:
                self._remember_secret(login)
            self._config_logins[key] = login
        return self._config_logins[key]

    def _from_docker_config(self, registry: str) -> Credentials | None:
        if self._docker_config is None:
            return None
        try:
            return stored_credentials(self._docker_config, registry)
        except ConfigError as exc:
            raise self._error(str(exc)) from None

    def _remember_secret(self, login: Credentials) -> None:
        self._secrets.add(login.password)
        self._basic(login)

    # --- errors -----------------------------------------------------------------------------------------------
    def _error(self, message: str, *, transient: bool = False, retry_after: float | None = None) -> RegistryError:
        return RegistryError(self._redact(message), transient=transient, retry_after=retry_after)

    def _redact(self, text: str) -> str:
        # Longest first, so that a secret containing another is replaced whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def _transport_error(
        self, exc: BaseException, what: str, registry: str, url: str, deadline: float
    ) -> RegistryError:
        """Classify a request that got no usable answer; permanent messages say what to fix."""
        netloc = urlsplit(url).netloc
        if isinstance(exc, (transport.DeadlineError, transport.ConnectTimeoutError)):
            return self._error(
                f"{what}: {registry} did not answer in full within {self._timeout:g} s, the time one registry "
                "operation may take (timeout-minutes).",
                transient=True,
            )
        if isinstance(exc, transport.TLSError):
            return self._tls_error(exc, what, registry, netloc)
        if isinstance(exc, (transport.ConnectError, transport.BrokenAnswerError)):
            answered = "refused" not in str(exc).lower()  # something listens, and broke off
            if url.startswith("http://") and answered and transport.speaks_tls(netloc, deadline):
                return self._https_port_error(what, url)
            return self._error(f"{what}: cannot talk to {registry} ({_reason(exc)}).", transient=True)
        return self._error(f"{what}: request to {registry} failed ({type(exc).__name__}: {exc}).")

    def _tls_error(self, exc: transport.TLSError, what: str, registry: str, netloc: str) -> RegistryError:
        reason = _tls_reason(exc)
        if transport.answered_in_plain_http(exc):
            return self._error(f"{what}: {netloc} answered HTTPS in plain HTTP. {self._plain_http_hint()}")
        if transport.is_certificate_error(exc):
            return self._error(
                f"{what}: the TLS certificate of {netloc} is not trusted ({reason}). Give the runner the "
                "registry's CA certificate (add it to the system's trust store, or point REQUESTS_CA_BUNDLE at "
                "it), or give the registry a certificate for the name it is reached by."
            )
        if any(cut in reason.lower() for cut in _TLS_CUT):
            return self._error(f"{what}: cannot talk to {registry} ({reason}).", transient=True)
        return self._error(
            f"{what}: the TLS handshake with {netloc} failed ({reason}). Check that it serves HTTPS with a TLS "
            "version and ciphers this runner supports."
        )

    @staticmethod
    def _plain_http_hint() -> str:
        return (
            "That port serves plain HTTP, which buildonce (like Docker without `insecure-registries`) uses only "
            "for registries on loopback addresses (localhost, 127.0.0.0/8, ::1). Serve the registry over HTTPS, "
            "or, if it runs on this machine, name it by a loopback address (e.g. localhost:PORT)."
        )

    def _https_port_error(self, what: str, url: str) -> RegistryError:
        return self._error(
            f"{what}: {urlsplit(url).netloc} speaks HTTPS, but {_without_query(url)} asks it in plain HTTP. That "
            "http:// URL came from the registry (its token realm or an upload location): make the registry "
            "announce https:// URLs for that port."
        )

    def _http_error(
        self,
        response: transport.Response,
        what: str,
        image: ImageName | None,
        actions: str,
        registry: str | None = None,
    ) -> RegistryError:
        """Classify an unexpected status; permanent messages say what to fix."""
        status = response.status_code
        host = registry or (image.registry if image else "the registry")
        if status == 400 and response.url.startswith("http://") and transport.says_https_port(response.content):
            return self._https_port_error(what, response.url)
        said = registry_said(response.content, response.headers.get("Content-Type", ""))
        said_text = f" The registry said: {said}." if said else ""
        if status in {408, 429} or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return self._error(
                f"{what}: {host} answered HTTP {status}.{said_text}", transient=True, retry_after=retry_after
            )
        repository = image.repository if image else "the repository"
        if status == 401:
            return self._error(f"{what}: {host} refused access (HTTP 401). {self._login_hint(host)}{said_text}")
        if status == 403:
            return self._error(
                f"{what}: the credentials for {host} lack {actions} access to {repository} (HTTP 403). Grant it, "
                f"e.g. for GHCR give the job `permissions: packages: write` and the package access to this "
                f"repository.{said_text}"
            )
        if status == 404 and "NAME_UNKNOWN" in error_codes(response.content):
            return self._error(
                f"{what}: repository {repository} does not exist on {host}, and this registry does not create "
                f"repositories on push. Create it first (e.g. an ECR repository) or correct the image name.{said_text}"
            )
        return self._error(f"{what}: {host} refused the request (HTTP {status}).{said_text}")

    def _login_hint(self, registry: str) -> str:
        login = self._logins.get(normalize_registry(registry)) or self._config_logins.get(normalize_registry(registry))
        if login is None:
            return (
                f"No credentials were found for {registry}: log in first with docker/login-action, or give the "
                "username and password inputs."
            )
        who = "the identity token" if login.username == _TOKEN_USERNAME else f"user {login.username!r}"
        return (
            f"The credentials of {who} were rejected or give no access: check the username and password or token "
            "(docker/login-action, or the username and password inputs)."
        )
