"""The registry client against an in-process fake registry: auth flows, how failures are classified, secrets."""

from __future__ import annotations

import base64
import contextlib
import email.utils
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from certificates import self_signed, server_context
from http_answers import QuietHandler
from loopback_names import TEST_NAME, resolve_test_name
from registry_server import free_port

from buildonce.docker.config import Credentials, docker_config_dir, normalize_registry
from buildonce.errors import ArtifactError, RegistryError
from buildonce.layout import read_layout
from buildonce.oci import OCI_INDEX, OCI_MANIFEST, Manifest, select_manifest, sha256_digest
from buildonce.references import ImageName
from buildonce.registry import http as transport
from buildonce.registry.auth import parse_challenge
from buildonce.registry.client import Registry, base_url
from buildonce.registry.http import insecure_by_default, parse_retry_after, registry_said
from buildonce.retry import RetryPolicy

DIGEST = "sha256:" + "ab" * 32
PASSWORD = "s3cret-Pass-0417"


# --- a fake registry -------------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    @property
    def authorization(self) -> str:
        return self.headers.get("authorization", "")


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


Handle = Callable[[Seen], Reply]


class FakeRegistry(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handle: Handle) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.handle = handle
        self.seen: list[Seen] = []
        # A short poll interval, so that shutting the server down at the end of a test is quick.
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def image(self, repository: str = "team/app") -> ImageName:
        return ImageName(f"{self.address}/{repository}")

    def requests_to(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == path]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out closes the connection under the handler; that is the test


class _Handler(QuietHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        fake = self.server
        assert isinstance(fake, FakeRegistry)
        length = int(self.headers.get("Content-Length") or 0)
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
        fake.seen.append(seen)
        reply = fake.handle(seen)
        time.sleep(reply.delay)
        self.answer(reply.status, reply.headers, reply.body)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _serve  # noqa: N815 - the names http.server calls


@pytest.fixture
def serve() -> Iterator[Callable[[Handle], FakeRegistry]]:
    started: list[FakeRegistry] = []

    def start(handle: Handle) -> FakeRegistry:
        fake = FakeRegistry(handle)
        fake.thread.start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.shutdown()
        fake.server_close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Callable[..., Registry]]:
    """Registries that read credentials only from what the test gives (an empty Docker config by default)."""
    made: list[Registry] = []

    def make(**kwargs: Any) -> Registry:
        kwargs.setdefault("docker_config", tmp_path / "empty-docker-config")
        registry = Registry(**kwargs)
        made.append(registry)
        return registry

    yield make
    for registry in made:
        registry.close()


def manifest_reply(seen: Seen) -> Reply:
    return Reply(200, {"Docker-Content-Digest": DIGEST, "Content-Type": OCI_MANIFEST}, b"{}")


def errors_body(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def basic_registry(user: str, password: str) -> Handle:
    def handle(seen: Seen) -> Reply:
        if seen.authorization != basic(user, password):
            return Reply(401, {"WWW-Authenticate": 'Basic realm="fake"'}, errors_body("UNAUTHORIZED", "login"))
        return manifest_reply(seen)

    return handle


def bearer_registry(tokens: dict[str, str], user: str | None = None, password: str | None = None) -> Handle:
    """A registry whose token service hands out ``tok/<scope>``; ``tokens`` records each request's scope."""

    def handle(seen: Seen) -> Reply:
        if seen.path == "/token":
            if user is not None and seen.authorization != basic(user, password or ""):
                return Reply(401, {}, errors_body("UNAUTHORIZED", f"bad login {seen.authorization}"))
            scopes = " ".join(seen.query.get("scope", []))
            tokens[scopes] = seen.query.get("service", [""])[0]
            return Reply(200, {"Content-Type": "application/json"}, json.dumps({"token": f"tok/{scopes}"}).encode())
        wanted = "pull,push" if seen.method in ("PUT", "POST") else "pull"
        if not seen.authorization.startswith("Bearer tok/") or not seen.authorization.endswith(wanted):
            address = seen.headers["host"]
            challenge = (
                f'Bearer realm="http://{address}/token",service="fake-registry",scope="repository:team/app:pull"'
            )
            return Reply(401, {"WWW-Authenticate": challenge}, errors_body("UNAUTHORIZED", "token needed"))
        if seen.method == "PUT":
            return Reply(201, {"Docker-Content-Digest": sha256_digest(seen.body)})
        return manifest_reply(seen)

    return handle


# --- auth ------------------------------------------------------------------------------------------------


def test_bearer_token_is_fetched_with_scope_and_cached(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    tokens: dict[str, str] = {}
    fake = serve(bearer_registry(tokens, "ci-bot", PASSWORD))
    registry = client(logins={fake.address: Credentials("ci-bot", PASSWORD)})

    assert registry.resolve(fake.image(), "v1") == DIGEST
    assert registry.resolve(fake.image(), "v2") == DIGEST
    assert tokens == {"repository:team/app:pull": "fake-registry"}
    token_requests = fake.requests_to("/token")
    assert len(token_requests) == 1
    assert token_requests[0].authorization == basic("ci-bot", PASSWORD)
    # One 401 to learn the challenge, then every request carries the cached token.
    statuses = [seen.authorization for seen in fake.seen if seen.path.startswith("/v2/")]
    assert statuses == ["", "Bearer tok/repository:team/app:pull", "Bearer tok/repository:team/app:pull"]

    manifest = Manifest.from_bytes(b'{"schemaVersion":2}', OCI_MANIFEST)
    assert registry.put_manifest(fake.image(), "v3", manifest) == manifest.digest
    assert "repository:team/app:pull,push" in tokens
    assert len(fake.requests_to("/token")) == 2
    put = fake.requests_to("/v2/team/app/manifests/v3")
    assert [seen.headers["content-type"] for seen in put] == [OCI_MANIFEST]  # token fetched before the PUT


def test_anonymous_bearer_token_and_access_token_field(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    def handle(seen: Seen) -> Reply:
        if seen.path == "/token":
            return Reply(200, {}, json.dumps({"access_token": "anon-token"}).encode())
        if seen.authorization != "Bearer anon-token":
            return Reply(401, {"WWW-Authenticate": f'Bearer realm="http://{seen.headers["host"]}/token"'})
        return manifest_reply(seen)

    fake = serve(handle)
    assert client().resolve(fake.image(), "v1") == DIGEST
    (token_request,) = fake.requests_to("/token")
    assert token_request.authorization == ""
    assert token_request.query["scope"] == ["repository:team/app:pull"]


def test_basic_auth_is_sent_after_the_challenge(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    fake = serve(basic_registry("ci-bot", PASSWORD))
    registry = client(logins={fake.address: Credentials("ci-bot", PASSWORD)})
    assert registry.resolve(fake.image(), "v1") == DIGEST
    assert registry.resolve(fake.image(), "v2") == DIGEST
    assert [seen.authorization for seen in fake.seen] == ["", basic("ci-bot", PASSWORD), basic("ci-bot", PASSWORD)]


def test_docker_config_credentials(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry], tmp_path: Path
) -> None:
    fake = serve(basic_registry("cfg-user", "cfg-pass-123"))
    config = tmp_path / "docker-config"
    config.mkdir()
    auth = base64.b64encode(b"cfg-user:cfg-pass-123").decode()
    (config / "config.json").write_text(json.dumps({"auths": {fake.address: {"auth": auth}}}))
    assert client(docker_config=config).resolve(fake.image(), "v1") == DIGEST


def test_docker_config_from_the_environment(
    serve: Callable[[Handle], FakeRegistry], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = serve(basic_registry("env-user", "env-pass-123"))
    auth = base64.b64encode(b"env-user:env-pass-123").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {f"http://{fake.address}/v2/": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert docker_config_dir(os.environ) == tmp_path
    with Registry(docker_config=docker_config_dir(os.environ)) as registry:
        assert registry.resolve(fake.image(), "v1") == DIGEST


def test_explicit_logins_win_over_the_docker_config(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry], tmp_path: Path
) -> None:
    fake = serve(basic_registry("input-user", PASSWORD))
    auth = base64.b64encode(b"stale-user:stale-pass").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {fake.address: {"auth": auth}}}))
    registry = client(docker_config=tmp_path, logins={fake.address: Credentials("input-user", PASSWORD)})
    assert registry.resolve(fake.image(), "v1") == DIGEST


def test_credential_helper(
    serve: Callable[[Handle], FakeRegistry],
    client: Callable[..., Registry],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = serve(basic_registry("helper-user", "helper-pass-123"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-fake"
    helper.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "server = sys.stdin.read().strip()\n"
        f"if sys.argv[1] == 'get' and server == {fake.address!r}:\n"
        "    print(json.dumps({'ServerURL': server, 'Username': 'helper-user', 'Secret': 'helper-pass-123'}))\n"
        "else:\n"
        "    print('credentials not found in native keychain'); sys.exit(1)\n"
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credsStore": "fake"}))
    assert client(docker_config=config).resolve(fake.image(), "v1") == DIGEST


def test_a_lookup_denied_with_a_pull_token_is_retried_with_push_scope(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    # Docker Hub answers 401, not 404, for a repository that does not exist yet and a pull-only token.
    def handle(seen: Seen) -> Reply:
        if seen.path == "/token":
            return Reply(200, {}, json.dumps({"token": "tok/" + seen.query["scope"][0]}).encode())
        if seen.authorization.endswith(":pull,push"):
            return Reply(404, {}, errors_body("NAME_UNKNOWN", "repository name not known to registry"))
        challenge = f'Bearer realm="http://{seen.headers["host"]}/token",service="hub"'
        return Reply(401, {"WWW-Authenticate": challenge}, errors_body("UNAUTHORIZED", "authentication required"))

    fake = serve(handle)
    registry = client(logins={fake.address: Credentials("ci-bot", PASSWORD)})
    assert registry.resolve(fake.image(), "v1") is None
    assert [seen.query["scope"] for seen in fake.requests_to("/token")] == [
        ["repository:team/app:pull"],
        ["repository:team/app:pull,push"],
    ]


def test_identity_token_is_exchanged_as_a_refresh_token(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry], tmp_path: Path
) -> None:
    def handle(seen: Seen) -> Reply:
        if seen.path == "/token":
            form = parse_qs(seen.body.decode())
            ok = seen.method == "POST" and form.get("refresh_token") == ["refresh-me-123"]
            return Reply(200, {}, json.dumps({"access_token": "from-refresh"}).encode()) if ok else Reply(401)
        if seen.authorization != "Bearer from-refresh":
            return Reply(401, {"WWW-Authenticate": f'Bearer realm="http://{seen.headers["host"]}/token"'})
        return manifest_reply(seen)

    fake = serve(handle)
    (tmp_path / "config.json").write_text(json.dumps({"auths": {fake.address: {"identitytoken": "refresh-me-123"}}}))
    assert client(docker_config=tmp_path).resolve(fake.image(), "v1") == DIGEST
    (token_request,) = fake.requests_to("/token")
    assert parse_qs(token_request.body.decode())["grant_type"] == ["refresh_token"]


# --- failures --------------------------------------------------------------------------------------------


def fail_with(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Handle:
    return lambda seen: Reply(status, headers or {}, body)


def error_of(call: Callable[[], object]) -> RegistryError:
    with pytest.raises(RegistryError) as caught:
        call()
    return caught.value


def test_429_with_retry_after_seconds_is_transient(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    fake = serve(fail_with(429, {"Retry-After": "7"}, errors_body("TOOMANYREQUESTS", "slow down")))
    error = error_of(lambda: client().resolve(fake.image(), "v1"))
    assert error.transient
    assert error.retry_after == 7
    assert fake.address in str(error)
    assert "team/app:v1" in str(error)


def test_429_with_retry_after_date_is_transient(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    fake = serve(fail_with(429, {"Retry-After": when}))
    error = error_of(lambda: client().get_manifest(fake.image(), "v1"))
    assert error.transient
    assert error.retry_after is not None
    assert 100 < error.retry_after <= 120


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_transient(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry], status: int
) -> None:
    fake = serve(fail_with(status))
    error = error_of(lambda: client().resolve(fake.image(), "v1"))
    assert error.transient
    assert error.retry_after is None
    assert f"HTTP {status}" in str(error)


def test_401_without_credentials_says_to_log_in(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    fake = serve(basic_registry("ci-bot", PASSWORD))
    error = error_of(lambda: client().resolve(fake.image(), "v1"))
    assert not error.transient
    assert "No credentials were found" in str(error)
    assert "docker/login-action" in str(error)
    assert len(fake.seen) == 1  # nothing to send, so no second try


def test_401_with_wrong_password_is_permanent_and_hides_it(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    fake = serve(basic_registry("ci-bot", "the-right-one"))
    registry = client(logins={fake.address: Credentials("ci-bot", PASSWORD)})
    error = error_of(lambda: registry.resolve(fake.image(), "v1"))
    assert not error.transient
    assert "rejected" in str(error)
    assert "'ci-bot'" in str(error)
    assert PASSWORD not in str(error)
    assert base64.b64encode(f"ci-bot:{PASSWORD}".encode()).decode() not in str(error)


def test_secrets_echoed_by_a_token_service_are_redacted(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    # The fake token service repeats the Authorization header it got in its error body.
    fake = serve(bearer_registry({}, "ci-bot", "the-right-one"))
    registry = client(logins={fake.address: Credentials("ci-bot", PASSWORD)})
    error = error_of(lambda: registry.resolve(fake.image(), "v1"))
    assert not error.transient
    assert "bad login Basic ***" in str(error)
    assert PASSWORD not in str(error)
    assert PASSWORD not in repr(Credentials("ci-bot", PASSWORD))


def test_403_names_the_missing_scope(serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]) -> None:
    fake = serve(fail_with(403, {}, errors_body("DENIED", "permission_denied: write_package")))
    manifest = Manifest.from_bytes(b"{}", OCI_MANIFEST)
    error = error_of(lambda: client().put_manifest(fake.image(), "v1", manifest))
    assert not error.transient
    assert "lack push access to team/app" in str(error)
    assert "packages: write" in str(error)
    assert "DENIED: permission_denied: write_package" in str(error)


def test_404_on_a_lookup_is_none(serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]) -> None:
    fake = serve(fail_with(404, {}, errors_body("NAME_UNKNOWN", "repository name not known to registry")))
    registry = client()
    assert registry.resolve(fake.image(), "v1") is None
    assert registry.get_manifest(fake.image(), "v1") is None
    assert registry.labels(fake.image(), "v1") is None


def test_404_name_unknown_on_push_says_to_create_the_repository(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    fake = serve(fail_with(404, {}, errors_body("NAME_UNKNOWN", "repository name not known to registry")))
    error = error_of(lambda: client().put_manifest(fake.image(), "v1", Manifest.from_bytes(b"{}")))
    assert not error.transient
    assert "repository team/app does not exist" in str(error)
    assert "Create it first" in str(error)


def test_400_says_what_the_registry_said(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    fake = serve(fail_with(400, {}, errors_body("MANIFEST_INVALID", "manifest invalid")))
    error = error_of(lambda: client().put_manifest(fake.image(), "v1", Manifest.from_bytes(b"{}")))
    assert not error.transient
    assert "MANIFEST_INVALID: manifest invalid" in str(error)
    assert f"{fake.address}/team/app:v1" in str(error)


def test_connection_refused_is_transient(client: Callable[..., Registry]) -> None:
    address = f"127.0.0.1:{free_port()}"
    error = error_of(lambda: client().resolve(ImageName(f"{address}/app"), "v1"))
    assert error.transient
    assert "Connection refused" in str(error)
    assert address in str(error)


def test_a_hung_response_times_out_as_transient(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    fake = serve(lambda seen: Reply(200, {"Docker-Content-Digest": DIGEST}, delay=2))
    started = time.monotonic()
    error = error_of(lambda: client(timeout=0.3).resolve(fake.image(), "v1"))
    assert error.transient
    assert "did not answer in full within 0.3 s" in str(error)
    assert time.monotonic() - started < 1.5


# --- reading images --------------------------------------------------------------------------------------


def test_labels_of_an_index_skip_attestations(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    def config(arch: str) -> bytes:
        return json.dumps({"architecture": arch, "config": {"Labels": {"arch": arch}}}).encode()

    def image(arch: str) -> bytes:
        return json.dumps({"mediaType": OCI_MANIFEST, "config": {"digest": sha256_digest(config(arch))}}).encode()

    attestation = {
        "digest": DIGEST,
        "platform": {"os": "unknown", "architecture": "unknown"},
        "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
    }
    index = json.dumps(
        {
            "mediaType": OCI_INDEX,
            "manifests": [
                attestation,
                {"digest": sha256_digest(image("amd64")), "platform": {"os": "linux", "architecture": "amd64"}},
                {"digest": sha256_digest(image("arm64")), "platform": {"os": "linux", "architecture": "arm64"}},
            ],
        }
    ).encode()
    blobs = {sha256_digest(body): body for body in (index, image("amd64"), image("arm64"), config("amd64"))}
    blobs[sha256_digest(config("arm64"))] = config("arm64")

    def handle(seen: Seen) -> Reply:
        name = seen.path.rsplit("/", 1)[-1]
        body = index if name == "v1" else blobs.get(name)
        return Reply(200, {}, body) if body is not None else Reply(404)

    fake = serve(handle)
    registry = client()
    assert registry.labels(fake.image(), "v1") == {"arch": "amd64"}
    arm = registry.image_config(fake.image(), "v1", "linux/arm64")
    assert arm is not None
    assert arm["architecture"] == "arm64"
    with pytest.raises(RegistryError, match=r"no image for linux/s390x \(it has: linux/amd64, linux/arm64\)"):
        registry.image_config(fake.image(), "v1", "linux/s390x")


# --- pure helpers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registry", "url"),
    [
        ("127.0.0.1:5000", "https://127.0.0.1:5000"),  # HTTPS first, as Docker; plain HTTP only as the fallback
        ("localhost:5000", "https://localhost:5000"),
        ("ghcr.io", "https://ghcr.io"),
        ("registry.example.com:5000", "https://registry.example.com:5000"),
        ("docker.io", "https://registry-1.docker.io"),
    ],
)
def test_base_url(registry: str, url: str) -> None:
    assert base_url(registry) == url


@pytest.mark.parametrize(
    ("netloc", "resolved", "insecure"),
    [
        ("127.0.0.1:5000", [], True),
        ("127.1.2.3", [], True),
        ("localhost:5000", [], True),
        ("LOCALHOST", [], True),
        ("[::1]:5000", [], True),
        ("::1", [], True),
        ("[::ffff:127.0.0.1]:5000", [], True),
        ("registry.test:5000", ["127.0.0.1"], True),
        ("registry.test", ["10.1.2.3", "::1"], True),  # any loopback address, as Docker's CIDR match
        ("registry.test:5000", ["10.1.2.3"], False),
        ("registry.test:5000", [], False),  # does not resolve
        ("10.0.0.1:5000", ["127.0.0.1"], False),  # an address is not resolved
        ("[2001:db8::1]:443", [], False),
        ("ghcr.io", ["140.82.112.34"], False),
    ],
)
def test_insecure_by_default_is_dockers_loopback_rule(netloc: str, resolved: list[str], insecure: bool) -> None:
    assert insecure_by_default(netloc, lambda host: resolved) is insecure


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("GHCR.io", "ghcr.io"),
        ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
    ],
)
def test_normalize_registry(name: str, key: str) -> None:
    assert normalize_registry(name) == key


def test_parse_challenge_with_quoted_commas() -> None:
    header = 'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'
    challenge = parse_challenge(header)
    assert challenge is not None
    assert challenge.scheme == "bearer"
    assert dict(challenge.params) == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull,push",
    }
    basic_challenge = parse_challenge('Basic realm="Registry Realm"')
    assert basic_challenge is not None
    assert basic_challenge.scheme == "basic"


def test_parse_retry_after() -> None:
    assert parse_retry_after("30") == 30
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480) == 30
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_registry_said() -> None:
    body = json.dumps({"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown", "detail": "sha256:1"}]})
    assert registry_said(body.encode()) == "BLOB_UNKNOWN: blob unknown (sha256:1)"
    assert registry_said(b"<html>oops</html>", "text/html") == ""
    assert registry_said(b"") == ""


def test_select_manifest() -> None:
    index: dict[str, Any] = {
        "manifests": [
            {"digest": "a", "platform": {"os": "unknown", "architecture": "unknown"}},
            {"digest": "b", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            {"digest": "c", "platform": {"os": "linux", "architecture": "arm64"}},
        ]
    }
    assert (select_manifest(index, None) or {})["digest"] == "b"
    assert (select_manifest(index, "linux/arm64/v8") or {})["digest"] == "c"
    assert (select_manifest(index, "linux/arm/v7") or {})["digest"] == "b"
    assert select_manifest(index, "linux/arm/v6") is None
    assert select_manifest({"manifests": [index["manifests"][0]]}, None) is None


def test_manifest_digest_and_json() -> None:
    manifest = Manifest.from_bytes(b'{"schemaVersion":2,"manifests":[]}')
    assert manifest.media_type == OCI_INDEX
    assert manifest.is_index
    assert manifest.digest == sha256_digest(manifest.raw)
    assert manifest.json() == {"schemaVersion": 2, "manifests": []}


def test_a_layout_with_two_top_level_manifests_is_refused(tmp_path: Path) -> None:
    entry = {"mediaType": OCI_MANIFEST, "digest": DIGEST, "size": 2}
    (tmp_path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry, entry]}))
    with pytest.raises(ArtifactError, match="lists 2 manifests"):
        read_layout(tmp_path)


def test_a_layout_with_a_missing_blob_is_refused(tmp_path: Path) -> None:
    entry = {"mediaType": OCI_MANIFEST, "digest": DIGEST, "size": 2}
    (tmp_path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    with pytest.raises(ArtifactError, match="is missing"):
        read_layout(tmp_path)


def test_a_token_service_outage_is_transient(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    def handle(seen: Seen) -> Reply:
        if seen.path == "/token":
            return Reply(503, {}, b"token service down")
        return Reply(401, {"WWW-Authenticate": f'Bearer realm="http://{seen.headers["host"]}/token"'})

    fake = serve(handle)
    error = error_of(lambda: client(logins={fake.address: Credentials("ci-bot", PASSWORD)}).resolve(fake.image(), "v1"))
    assert error.transient
    assert "HTTP 503" in str(error)
    assert "token" in str(error)


# --- the deadline of an operation ------------------------------------------------------------------------

TLS_HELLO = 0x16
PLAIN_400 = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Dripper:
    """A registry that answers every request with ``answer``: its first ``fast`` bytes at once, then one byte
    every ``interval`` seconds; with ``answer=None`` it never reads the request at all. A TLS handshake gets a
    plain-HTTP 400, as a plain-HTTP registry answers one, or, ``tls_silent``, no answer at all."""

    def __init__(self, answer: bytes | None, interval: float = 0.0, fast: int = 0, tls_silent: bool = False) -> None:
        self.answer, self.interval, self.fast, self.tls_silent = answer, interval, fast, tls_silent
        self.stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(10)
            first = conn.recv(1)
            if first[:1] == bytes([TLS_HELLO]):
                if self.tls_silent:
                    self.stopping.wait(10)
                else:
                    conn.sendall(PLAIN_400)
                return
            if self.answer is None:
                self.stopping.wait(10)
                return
            head = first
            while b"\r\n\r\n" not in head and len(head) < 65536:
                head += conn.recv(4096)
            conn.sendall(self.answer[: self.fast])
            for byte in self.answer[self.fast :]:
                if self.stopping.wait(self.interval):
                    return
                conn.sendall(bytes([byte]))

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def drip() -> Iterator[Callable[..., Dripper]]:
    started: list[Dripper] = []

    def start(answer: bytes | None, interval: float = 0.0, fast: int = 0, tls_silent: bool = False) -> Dripper:
        server = Dripper(answer, interval, fast, tls_silent)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def timed(call: Callable[[], object]) -> tuple[RegistryError, float]:
    started = time.monotonic()
    error = error_of(call)
    return error, time.monotonic() - started


def assert_deadline(error: RegistryError, seconds: float) -> None:
    assert error.transient
    assert f"did not answer in full within {seconds:g} s" in str(error)
    assert "timeout-minutes" in str(error)


HEAD_ANSWER = (
    f"HTTP/1.1 200 OK\r\nDocker-Content-Digest: {DIGEST}\r\nContent-Length: 0\r\nX-Pad: {'x' * 300}\r\n\r\n".encode()
)


def test_headers_dripped_a_byte_at_a_time_are_cut_at_the_deadline(
    drip: Callable[..., Dripper], client: Callable[..., Registry]
) -> None:
    # Some 8 s for the whole head, each byte well within any socket timeout: only a deadline cuts it.
    server = drip(HEAD_ANSWER, interval=0.02)
    error, elapsed = timed(lambda: client(timeout=0.6).resolve(ImageName(f"{server.address}/team/app"), "v1"))
    assert_deadline(error, 0.6)
    assert 0.55 <= elapsed < 2


def test_a_body_dripped_a_byte_at_a_time_is_cut_at_the_deadline(
    drip: Callable[..., Dripper], client: Callable[..., Registry]
) -> None:
    body = json.dumps({"mediaType": OCI_MANIFEST, "pad": "x" * 400}).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {OCI_MANIFEST}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    server = drip(head + body, interval=0.02, fast=len(head))
    error, elapsed = timed(lambda: client(timeout=0.6).get_manifest(ImageName(f"{server.address}/team/app"), "v1"))
    assert_deadline(error, 0.6)
    assert 0.55 <= elapsed < 2


def test_an_upload_the_registry_never_reads_is_cut_at_the_deadline(
    drip: Callable[..., Dripper], client: Callable[..., Registry]
) -> None:
    server = drip(None)
    manifest = Manifest.from_bytes(b"x" * (64 << 20), OCI_MANIFEST)  # far more than the socket buffers hold
    image = ImageName(f"{server.address}/team/app")
    error, elapsed = timed(lambda: client(timeout=0.6).put_manifest(image, "v1", manifest))
    assert_deadline(error, 0.6)
    assert 0.55 <= elapsed < 2


def test_one_deadline_bounds_all_the_requests_of_an_operation(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    config = json.dumps({"config": {"Labels": {"a": "b"}}}).encode()
    image = json.dumps({"mediaType": OCI_MANIFEST, "config": {"digest": sha256_digest(config)}}).encode()
    entry = {"digest": sha256_digest(image), "platform": {"os": "linux", "architecture": "amd64"}}
    index = json.dumps({"mediaType": OCI_INDEX, "manifests": [entry]}).encode()
    bodies = {sha256_digest(config): config, sha256_digest(image): image, "v1": index}

    fake = serve(lambda seen: Reply(200, {}, bodies[seen.path.rsplit("/", 1)[-1]], delay=1.0))
    registry = client(timeout=1.6)  # each of the three requests takes 1 s, within the bound; together, 3 s
    error, elapsed = timed(lambda: registry.labels(fake.image(), "v1"))
    assert_deadline(error, 1.6)
    assert elapsed < 2.6
    assert [seen.path.rsplit("/", 1)[-1] for seen in fake.seen] == ["v1", sha256_digest(image)]

    # Every operation has a deadline of its own: two lookups of 0.8 s each, one after the other, both pass.
    slow = serve(lambda seen: Reply(200, {"Docker-Content-Digest": DIGEST}, delay=0.8))
    assert registry.resolve(slow.image(), "v1") == DIGEST
    assert registry.resolve(slow.image(), "v2") == DIGEST


def test_a_token_fetch_counts_toward_the_deadline(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    def handle(seen: Seen) -> Reply:
        if seen.path == "/token":
            return Reply(200, {}, json.dumps({"token": "t"}).encode(), delay=3)
        if seen.authorization != "Bearer t":
            return Reply(401, {"WWW-Authenticate": f'Bearer realm="http://{seen.headers["host"]}/token"'})
        return manifest_reply(seen)

    fake = serve(handle)
    error, elapsed = timed(lambda: client(timeout=1).resolve(fake.image(), "v1"))
    assert_deadline(error, 1)
    assert "token from" in str(error)
    assert elapsed < 2.5


def deadline_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "buildonce-deadlines"]


def test_every_request_in_flight_shares_one_deadline_thread_that_ends_when_idle(
    serve: Callable[[Handle], FakeRegistry], drip: Callable[..., Dripper], client: Callable[..., Registry]
) -> None:
    """Many requests, some at once and some cut at their deadline, keep at most one watchdog thread alive,
    and it ends once no request is in flight."""
    fake = serve(lambda seen: Reply(200, {"Docker-Content-Digest": DIGEST}, delay=0.05))
    slow = drip(HEAD_ANSWER, interval=0.02)
    quick, cut = client(timeout=5), client(timeout=0.4)
    most: list[int] = []

    def look_up(_: int) -> object:
        most.append(len(deadline_threads()))
        return quick.resolve(fake.image(), "v1")

    with ThreadPoolExecutor(max_workers=4) as pool:
        cut_short = pool.submit(lambda: error_of(lambda: cut.resolve(ImageName(f"{slow.address}/team/app"), "v1")))
        assert list(pool.map(look_up, range(40))) == [DIGEST] * 40
        assert_deadline(cut_short.result(), 0.4)
    assert max(most) == 1, "the requests in flight are watched by one thread, not one each"
    for _ in range(100):  # bounded: the thread ends at once when the last request finishes
        if not deadline_threads():
            break
        time.sleep(0.02)
    assert deadline_threads() == []


def test_a_timeout_is_retried_by_the_policy(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    delays = [2.0, 0.0]
    fake = serve(lambda seen: Reply(200, {"Docker-Content-Digest": DIGEST}, delay=delays.pop(0)))
    registry = client(timeout=0.5)
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=3, wait_seconds=1, sleep=sleeps.append)
    assert policy.call(lambda: registry.resolve(fake.image(), "v1"), "look up") == (DIGEST, 2)
    assert sleeps == [1]


# --- TLS, and registries Docker treats as insecure -------------------------------------------------------


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], None]:
    return resolve_test_name(monkeypatch)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"), ("127.0.0.1", TEST_NAME))


@pytest.fixture
def serve_tls(
    serve: Callable[[Handle], FakeRegistry], certificate: tuple[Path, Path]
) -> Callable[[Handle], FakeRegistry]:
    """A fake registry that speaks only HTTPS; a plain-HTTP request gets its connection reset."""

    def start(handle: Handle) -> FakeRegistry:
        fake = serve(handle)
        fake.socket = server_context(*certificate).wrap_socket(fake.socket, server_side=True)
        return fake

    return start


def never_retried(call: Callable[[], object]) -> RegistryError:
    """The permanent error of ``call`` under a three-attempt policy, after checking it was not retried."""
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=3, wait_seconds=1, sleep=sleeps.append)
    error = error_of(lambda: policy.call(call, "the operation"))
    assert not error.transient
    assert sleeps == []
    return error


def test_a_loopback_name_that_speaks_plain_http_is_asked_in_plain_http(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry], resolver: Callable[[list[str]], None]
) -> None:
    fake = serve(basic_registry("ci-bot", PASSWORD))
    netloc = f"{TEST_NAME}:{fake.server_address[1]}"
    registry = client(logins={netloc: Credentials("ci-bot", PASSWORD)})
    assert registry.resolve(ImageName(f"{netloc}/team/app"), "v1") == DIGEST
    assert registry.resolve(ImageName(f"{netloc}/team/app"), "v2") == DIGEST
    assert [seen.authorization for seen in fake.seen] == ["", basic("ci-bot", PASSWORD), basic("ci-bot", PASSWORD)]
    assert {seen.headers["host"] for seen in fake.seen} == {netloc}


def test_https_to_a_plain_http_port_is_permanent_and_says_what_to_fix(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry], resolver: Callable[[list[str]], None]
) -> None:
    resolver(["192.0.2.7"])  # not loopback: Docker would not fall back to plain HTTP either
    fake = serve(manifest_reply)
    netloc = f"{TEST_NAME}:{fake.server_address[1]}"
    error = never_retried(lambda: client().resolve(ImageName(f"{netloc}/team/app"), "v1"))
    assert f"{netloc} answered HTTPS in plain HTTP" in str(error)
    assert "loopback addresses" in str(error)
    assert "Serve the registry over HTTPS" in str(error)
    assert "SSLError" not in str(error)
    assert fake.seen == []


def test_a_loopback_tls_registry_is_used_without_checking_its_certificate(
    serve_tls: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    fake = serve_tls(manifest_reply)  # self-signed: Docker skips the check for a registry it treats as insecure
    assert client().resolve(fake.image(), "v1") == DIGEST
    assert len(fake.seen) == 1


def test_an_untrusted_certificate_is_permanent_and_says_what_to_fix(
    serve_tls: Callable[[Handle], FakeRegistry], client: Callable[..., Registry], resolver: Callable[[list[str]], None]
) -> None:
    resolver(["192.0.2.7"])
    fake = serve_tls(manifest_reply)
    netloc = f"{TEST_NAME}:{fake.server_address[1]}"
    error = never_retried(lambda: client().resolve(ImageName(f"{netloc}/team/app"), "v1"))
    assert f"the TLS certificate of {netloc} is not trusted (certificate verify failed: self-signed" in str(error)
    assert "CA certificate" in str(error)
    assert fake.seen == []


def test_plain_http_to_a_tls_port_is_permanent_and_says_what_to_fix(
    serve: Callable[[Handle], FakeRegistry],
    serve_tls: Callable[[Handle], FakeRegistry],
    client: Callable[..., Registry],
) -> None:
    tokens = serve_tls(lambda seen: Reply(200, {}, json.dumps({"token": "t"}).encode()))
    realm = f"http://{tokens.address}/token"  # the registry announces its HTTPS token service as http://
    fake = serve(lambda seen: Reply(401, {"WWW-Authenticate": f'Bearer realm="{realm}"'}))
    error = never_retried(lambda: client().resolve(fake.image(), "v1"))
    assert f"{tokens.address} speaks HTTPS, but {realm} asks it in plain HTTP" in str(error)
    assert "announce https:// URLs" in str(error)
    assert tokens.seen == []


def test_an_https_port_answering_plain_http_with_400_is_permanent(
    serve: Callable[[Handle], FakeRegistry], client: Callable[..., Registry]
) -> None:
    def handle(seen: Seen) -> Reply:
        if seen.path == "/token":  # what Go's net/http answers a plain-HTTP request on an HTTPS port
            return Reply(400, {}, b"Client sent an HTTP request to an HTTPS server.\n")
        return Reply(401, {"WWW-Authenticate": f'Bearer realm="http://{seen.headers["host"]}/token"'})

    fake = serve(handle)
    error = never_retried(lambda: client().resolve(fake.image(), "v1"))
    assert f"{fake.address} speaks HTTPS, but http://{fake.address}/token asks it in plain HTTP" in str(error)


def test_a_reset_from_a_plain_http_server_stays_transient(
    drip: Callable[..., Dripper], client: Callable[..., Registry]
) -> None:
    server = drip(b"")  # reads the request, closes without an answer; not a TLS server
    error = error_of(lambda: client().resolve(ImageName(f"{server.address}/team/app"), "v1"))
    assert error.transient
    assert f"cannot talk to {server.address}" in str(error)


def test_a_loopback_registry_silent_to_tls_is_asked_in_plain_http_after_the_handshake_timeout(
    drip: Callable[..., Dripper], client: Callable[..., Registry], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "TLS_HANDSHAKE_SECONDS", 0.5)
    server = drip(HEAD_ANSWER, tls_silent=True)  # waits for a request line that a ClientHello never ends
    started = time.monotonic()
    assert client(timeout=30).resolve(ImageName(f"{server.address}/team/app"), "v1") == DIGEST
    assert 0.5 <= time.monotonic() - started < 5


@pytest.mark.parametrize("header", ["²", "٣", "1_0", " 12x"])
def test_retry_after_that_is_no_ascii_number_or_date_is_ignored(header: str) -> None:
    assert parse_retry_after(header) is None
