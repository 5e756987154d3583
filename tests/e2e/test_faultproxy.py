"""The fault-injecting proxy, in front of the real registry, with the real engine and plain HTTP clients.

These tests also pin down what Docker Engine 26 (containerd image store) does when the registry fails, since
buildonce's classification of push errors relies on it:

- a 5xx on a manifest PUT or a blob upload is not retried by the engine: ``docker push`` fails at once with
  ``unexpected status from PUT request to <url>: 503 Service Unavailable``;
- a 429 is retried by the engine itself, immediately and up to six attempts per request, Retry-After unread;
- a reset connection fails the push with ``failed to do request: Put "<url>": <socket error>``;
- a registry that is down fails it with ``dial tcp <address>: connect: connection refused``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import subprocess
import time
import tracemalloc
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
import registry_api
from action_run import run_on_fixture
from certificates import self_signed, server_context
from faultproxy import Delay, Down, Drip, Drop, FaultProxy, Hang, Status
from loopback_names import TEST_NAME, resolve_test_name
from registry_server import RegistryServer

from buildonce.errors import RegistryError
from buildonce.oci import MANIFEST_ACCEPT
from buildonce.references import ImageName
from buildonce.registry.client import Registry
from buildonce.retry import RetryPolicy

MB = 1024 * 1024


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def docker(*argv: str, timeout: float = 120) -> tuple[int, str]:
    """Exit code and combined output of a docker CLI command."""
    result = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout, check=False)
    return result.returncode, result.stdout + result.stderr


def scratch_context(directory: Path, *, big_bytes: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hello.txt").write_text(uuid.uuid4().hex)  # a fresh layer, never already in the registry
    dockerfile = "FROM scratch\nCOPY hello.txt /hello.txt\n"
    if big_bytes:
        with (directory / "big.bin").open("wb") as big:
            for _ in range(big_bytes // MB):
                big.write(os.urandom(MB))
        dockerfile += "COPY big.bin /big.bin\n"
    (directory / "Dockerfile").write_text(dockerfile)
    return directory


def pushed_digest(output: str) -> str:
    found = re.search(r"digest: (sha256:[0-9a-f]{64})", output)
    assert found, output
    return found.group(1)


def blob(address: str, repository: str, digest: str) -> bytes:
    url = f"http://{address}/v2/{repository}/blobs/{digest}"
    with urllib.request.urlopen(url, timeout=30) as response:
        data: bytes = response.read()
    return data


def get(
    address: str, path: str = "/v2/", timeout: float = 10, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    connection = http.client.HTTPConnection(address, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def ask_again(connection: http.client.HTTPConnection) -> None:
    connection.request("GET", "/v2/")
    connection.getresponse().read()


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    with FaultProxy(registry.address) as server:
        yield server


@pytest.fixture(scope="module")
def local_image(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A small image in the engine's store, to be tagged for and pushed through each test's proxy."""
    name = f"buildonce-faultproxy-src:{uuid.uuid4().hex[:10]}"
    code, output = docker("buildx", "build", "--load", "-t", name, str(scratch_context(tmp_path_factory.mktemp("src"))))
    assert code == 0, output
    yield name
    docker("image", "rm", name)


@pytest.fixture
def tag_for(local_image: str) -> Iterator[Callable[[FaultProxy, str], str]]:
    """Tag the local image as <proxy>/<repository>:v1; the tags are removed afterwards."""
    made: list[str] = []

    def tag(proxy: FaultProxy, repository: str) -> str:
        reference = f"{proxy.address}/{repository}:v1"
        code, output = docker("tag", local_image, reference)
        assert code == 0, output
        made.append(reference)
        return reference

    yield tag
    for reference in made:
        docker("image", "rm", reference)


# -- the real engine through the proxy -------------------------------------------------------------------------


def test_buildx_push_and_pull_through_the_proxy(proxy: FaultProxy, registry: RegistryServer, tmp_path: Path) -> None:
    repository = unique("fp-push")
    reference = f"{proxy.address}/{repository}:v1"
    code, output = docker("buildx", "build", "--push", "-t", reference, str(scratch_context(tmp_path)))
    assert code == 0, output

    digest = registry_api.digest_of(registry.address, repository, "v1")  # asked directly, not through the proxy
    assert digest is not None
    assert proxy.count("PUT", rf"^/v2/{repository}/manifests/v1$", outcome=201) >= 1
    assert proxy.count("PUT", rf"^/v2/{repository}/blobs/uploads/", outcome=201) >= 2  # a layer and a config
    answered = [entry.outcome for entry in proxy.requests]
    assert all(isinstance(outcome, int) and outcome < 500 for outcome in answered), answered

    # A Python client reads the image back through the proxy, blobs checked against their digests.
    assert registry_api.digest_of(proxy.address, repository, "v1") == digest
    index = registry_api.manifest(proxy.address, repository, digest)
    image = next(entry for entry in index["manifests"] if entry["platform"]["os"] != "unknown")
    manifest = registry_api.manifest(proxy.address, repository, image["digest"])
    for descriptor in [manifest["config"], *manifest["layers"]]:
        data = blob(proxy.address, repository, descriptor["digest"])
        assert len(data) == descriptor["size"]
        assert "sha256:" + hashlib.sha256(data).hexdigest() == descriptor["digest"]

    code, output = docker("image", "rm", reference)
    assert code == 0, output
    proxy.clear_log()
    code, output = docker("pull", reference)
    assert code == 0, output
    assert digest in output
    assert proxy.count(path=rf"^/v2/{repository}/manifests/", outcome=200) >= 1
    docker("image", "rm", reference)


def test_a_50_mb_layer_streams_through_the_proxy(proxy: FaultProxy, registry: RegistryServer, tmp_path: Path) -> None:
    repository = unique("fp-big")
    reference = f"{proxy.address}/{repository}:v1"
    context = scratch_context(tmp_path, big_bytes=50 * MB)
    tracemalloc.start()
    try:
        code, output = docker("buildx", "build", "--push", "-t", reference, str(context), timeout=300)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 0, output
    docker("image", "rm", reference)

    uploads = [entry for entry in proxy.requests if "/blobs/uploads/" in entry.path and entry.method == "PUT"]
    sizes = [int(entry.header("Content-Length") or 0) for entry in uploads]
    assert max(sizes) > 50 * MB, sizes  # random bytes do not compress
    assert all(entry.outcome == 201 for entry in uploads)
    assert peak < 8 * MB, f"the proxy held {peak} bytes at once"

    digest = registry_api.digest_of(registry.address, repository, "v1")
    assert digest is not None
    (config,) = registry_api.configs(registry.address, repository, digest)
    assert len(config["rootfs"]["diff_ids"]) == 2


def test_503_on_the_manifest_put_fails_the_push_without_an_engine_retry(
    proxy: FaultProxy, registry: RegistryServer, tag_for: Callable[[FaultProxy, str], str]
) -> None:
    repository = unique("fp-503")
    reference = tag_for(proxy, repository)
    rule = proxy.add_rule(Status(503), method="PUT", path=r"/manifests/", times=1)

    code, output = docker("push", reference)
    # One 503 is enough: had the engine retried, the rule (spent after one firing) would have let it through.
    assert code != 0, output
    assert f"unexpected status from PUT request to http://{proxy.address}/v2/{repository}/manifests/v1" in output
    assert "503 Service Unavailable" in output
    assert rule.hits == 1
    assert proxy.count("PUT", "/manifests/", outcome="status:503") == 1

    code, output = docker("push", reference)
    assert code == 0, output
    assert registry_api.digest_of(registry.address, repository, "v1") == pushed_digest(output)


def test_503_on_a_blob_upload_fails_the_sdk_push_stream(
    proxy: FaultProxy, registry: RegistryServer, tmp_path: Path
) -> None:
    import docker as docker_sdk

    repository = unique("fp-blob503")
    reference = f"{proxy.address}/{repository}:v1"
    # Built afresh: blobs the engine already pushed to this registry would be mounted, not uploaded.
    code, output = docker("buildx", "build", "--load", "-t", reference, str(scratch_context(tmp_path)))
    assert code == 0, output
    rule = proxy.add_rule(Status(503), method="PUT", path=r"/blobs/uploads/", times=1)
    client = docker_sdk.from_env()
    try:
        events: list[dict[str, Any]] = list(
            client.api.push(reference.rsplit(":", 1)[0], tag="v1", stream=True, decode=True)
        )
        errors = [event for event in events if "error" in event]
        assert len(errors) == 1, events
        message = errors[0]["errorDetail"]["message"]
        assert message == errors[0]["error"]
        assert message.startswith('failed commit on ref "'), message
        assert f"unexpected status from PUT request to http://{proxy.address}/v2/{repository}/blobs/uploads/" in message
        assert message.endswith(": 503 Service Unavailable"), message
        assert rule.hits == 1

        events = list(client.api.push(reference.rsplit(":", 1)[0], tag="v1", stream=True, decode=True))
        assert not [event for event in events if "error" in event], events
    finally:
        client.close()
        docker("image", "rm", reference)
    assert registry_api.digest_of(registry.address, repository, "v1") is not None


def test_the_engine_retries_429_by_itself_and_ignores_retry_after(
    proxy: FaultProxy, tag_for: Callable[[FaultProxy, str], str]
) -> None:
    reference = tag_for(proxy, unique("fp-429"))
    forever = proxy.add_rule(Status(429, {"Retry-After": "1"}), method="PUT", path=r"/manifests/", times=None)
    started = time.monotonic()
    code, output = docker("push", reference)
    elapsed = time.monotonic() - started
    assert code != 0, output
    assert "429 Too Many Requests" in output
    assert forever.hits >= 6  # containerd gives up after the sixth answer to one request
    assert elapsed < 4, "the engine waited as Retry-After asked"

    proxy.clear_rules()
    once = proxy.add_rule(Status(429, {"Retry-After": "1"}), method="PUT", path=r"/manifests/", times=1)
    code, output = docker("push", reference)
    assert code == 0, output
    assert once.hits == 1


def test_a_dropped_manifest_put_fails_the_push(proxy: FaultProxy, tag_for: Callable[[FaultProxy, str], str]) -> None:
    repository = unique("fp-drop")
    reference = tag_for(proxy, repository)
    rule = proxy.add_rule(Drop(), method="PUT", path=r"/manifests/", times=1)
    code, output = docker("push", reference)
    assert code != 0, output
    # The engine tries https first and falls back to http, yet reports the https URL.
    assert f'failed to do request: Put "https://{proxy.address}/v2/{repository}/manifests/v1": ' in output
    assert re.search(r"connection reset by peer|use of closed network connection|EOF", output), output
    assert rule.hits == 1
    assert proxy.count("PUT", "/manifests/", outcome="drop") == 1


def test_a_registry_that_is_down_refuses_the_push(
    proxy: FaultProxy, registry: RegistryServer, tag_for: Callable[[FaultProxy, str], str]
) -> None:
    repository = unique("fp-down")
    reference = tag_for(proxy, repository)
    proxy.set_down(True)
    code, output = docker("push", reference)
    assert code != 0, output
    assert f"dial tcp {proxy.address}: connect: connection refused" in output
    assert proxy.requests == []

    proxy.set_down(False)
    code, output = docker("push", reference)
    assert code == 0, output
    assert registry_api.digest_of(registry.address, repository, "v1") == pushed_digest(output)


# -- plain HTTP clients through the proxy ----------------------------------------------------------------------


def test_429_with_retry_after_reaches_the_client(proxy: FaultProxy) -> None:
    rule = proxy.add_rule(Status(429, {"Retry-After": "1"}, b"slow down"), method="GET", path=r"^/v2/$")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"http://{proxy.address}/v2/", timeout=5)
    assert caught.value.code == 429
    assert caught.value.headers["Retry-After"] == "1"
    assert caught.value.headers["Connection"] == "close"
    assert caught.value.read() == b"slow down"
    caught.value.close()
    assert rule.hits == 1
    assert get(proxy.address)[0] == 200  # the rule fired its one time
    assert [(entry.method, entry.path, entry.outcome) for entry in proxy.requests] == [
        ("GET", "/v2/", "status:429"),
        ("GET", "/v2/", 200),
    ]


def test_a_status_reads_the_whole_request_body_before_answering(proxy: FaultProxy) -> None:
    challenge = 'Basic realm="buildonce-test"'
    proxy.add_rule(Status(401, {"WWW-Authenticate": challenge}, b"denied"), method="PUT")
    connection = http.client.HTTPConnection(proxy.address, timeout=10)
    body = b"x" * (16 * MB)  # far more than the socket buffers: the send would stall if nobody read it
    connection.request("PUT", "/v2/anything/blobs/uploads/1?digest=sha256:0", body=body)
    response = connection.getresponse()
    assert response.status == 401
    assert response.getheader("WWW-Authenticate") == challenge
    assert response.read() == b"denied"
    connection.close()


def test_drop_resets_the_connection(proxy: FaultProxy) -> None:
    proxy.add_rule(Drop())
    with pytest.raises(ConnectionResetError):
        get(proxy.address)
    assert proxy.count(outcome="drop") == 1


def test_hang_sends_nothing_then_closes(proxy: FaultProxy) -> None:
    rule = proxy.add_rule(Hang(2), times=2)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        get(proxy.address, timeout=1)
    assert 1 <= time.monotonic() - started < 2
    started = time.monotonic()
    with pytest.raises(http.client.RemoteDisconnected):
        get(proxy.address, timeout=5)
    assert 2 <= time.monotonic() - started < 4
    assert rule.hits == 2


def test_delay_forwards_late(proxy: FaultProxy) -> None:
    proxy.add_rule(Delay(0.5), method="GET", path=r"^/v2/$")
    started = time.monotonic()
    assert get(proxy.address)[0] == 200
    assert time.monotonic() - started >= 0.5
    assert proxy.count("GET", outcome=200) == 1


def test_down_rule_and_set_down(proxy: FaultProxy) -> None:
    proxy.add_rule(Down(), path="^/v2/$")
    with pytest.raises(ConnectionResetError):
        get(proxy.address)
    assert proxy.count(outcome="down") == 1

    kept = http.client.HTTPConnection(proxy.address, timeout=5)
    kept.request("GET", "/v2/")
    kept_response = kept.getresponse()
    assert kept_response.status == 200
    kept_response.read()
    proxy.set_down(True)
    with pytest.raises(ConnectionError):  # the open keep-alive connection was reset
        ask_again(kept)
    kept.close()
    with pytest.raises(ConnectionRefusedError):
        get(proxy.address)
    proxy.set_down(False)
    assert get(proxy.address)[0] == 200


def test_rules_match_in_order_by_method_and_path(proxy: FaultProxy) -> None:
    never = proxy.add_rule(Status(500), method="DELETE", times=None)
    first = proxy.add_rule(Status(502), path=r"/_catalog\?n=1$", times=1)
    second = proxy.add_rule(Status(503), method="get", path=r"/_catalog", times=None)
    assert get(proxy.address, "/v2/_catalog?n=1")[0] == 502
    assert get(proxy.address, "/v2/_catalog?n=1")[0] == 503
    assert get(proxy.address, "/v2/")[0] == 200
    assert (never.hits, first.hits, second.hits) == (0, 1, 1)
    proxy.clear_rules()
    assert get(proxy.address, "/v2/_catalog?n=1")[0] == 200
    assert proxy.count("GET", r"_catalog") == 3
    assert proxy.count(outcome=200) == 2


def test_chunked_upload_keep_alive_and_location_through_the_proxy(proxy: FaultProxy, registry: RegistryServer) -> None:
    repository = unique("fp-chunked")
    piece = os.urandom(MB)
    digest = "sha256:" + hashlib.sha256(piece * 5).hexdigest()
    connection = http.client.HTTPConnection(proxy.address, timeout=30)

    connection.request("POST", f"/v2/{repository}/blobs/uploads/", headers={"Content-Length": "0"})
    started = connection.getresponse()
    started.read()
    assert started.status == 202
    location = started.getheader("Location") or ""
    # The registry built this absolute URL from the forwarded Host header: it must lead back to the proxy.
    assert location.startswith(f"http://{proxy.address}/v2/{repository}/blobs/uploads/"), location

    target = location.removeprefix(f"http://{proxy.address}") + f"&digest={digest}"
    connection.request("PUT", target, body=iter([piece] * 5), encode_chunked=True)
    finished = connection.getresponse()
    finished.read()
    assert finished.status == 201
    (upload,) = [entry for entry in proxy.requests if entry.method == "PUT"]
    assert upload.header("Transfer-Encoding") == "chunked"

    connection.request("HEAD", f"/v2/{repository}/blobs/{digest}")
    head = connection.getresponse()
    assert head.status == 200
    assert head.getheader("Content-Length") == str(5 * MB)
    assert head.read() == b""
    connection.request("GET", f"/v2/{repository}/blobs/{digest}")
    assert connection.getresponse().read() == piece * 5
    connection.close()

    assert proxy.connections == 1  # all four requests on one kept-alive connection
    assert blob(registry.address, repository, digest) == piece * 5


# -- slow answers, TLS, and buildonce's registry client through the proxy --------------------------------------


@pytest.fixture
def pushed(proxy: FaultProxy, registry: RegistryServer, tag_for: Callable[[FaultProxy, str], str]) -> tuple[str, str]:
    """An image the real engine pushed through the proxy: its repository and its index digest."""
    repository = unique("fp-slow")
    code, output = docker("push", tag_for(proxy, repository))
    assert code == 0, output
    digest = registry_api.digest_of(registry.address, repository, "v1")
    assert digest is not None
    proxy.clear_log()
    return repository, digest


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], None]:
    return resolve_test_name(monkeypatch)


def timed_error(call: Callable[[], object]) -> tuple[RegistryError, float]:
    started = time.monotonic()
    with pytest.raises(RegistryError) as caught:
        call()
    return caught.value, time.monotonic() - started


def test_drip_relays_the_head_or_the_body_a_byte_at_a_time(proxy: FaultProxy, pushed: tuple[str, str]) -> None:
    repository, digest = pushed
    path = f"/v2/{repository}/manifests/{digest}"
    accept = {"Accept": MANIFEST_ACCEPT}
    status, headers, body = get(proxy.address, path, headers=accept)
    assert status == 200
    head_size = sum(len(f"{name}: {value}\r\n") for name, value in headers.items())

    proxy.add_rule(Drip(0.005, "head"), method="GET", path="/manifests/")
    started = time.monotonic()
    assert get(proxy.address, path, headers=accept)[::2] == (200, body)
    assert time.monotonic() - started >= head_size * 0.005

    proxy.add_rule(Drip(0.005, "body"), method="GET", path="/manifests/")
    started = time.monotonic()
    assert get(proxy.address, path, headers=accept)[::2] == (200, body)
    assert time.monotonic() - started >= len(body) * 0.005
    assert proxy.count("GET", "/manifests/", outcome=200) == 3


@pytest.mark.parametrize(
    ("part", "method"),
    [("head", "HEAD"), ("body", "GET")],
    ids=["slow headers", "slow body"],
)
def test_a_dripping_registry_is_cut_at_the_operations_deadline(
    proxy: FaultProxy, pushed: tuple[str, str], tmp_path: Path, part: Literal["head", "body"], method: str
) -> None:
    repository, digest = pushed
    image = ImageName(f"{proxy.address}/{repository}")
    # 0.05 s a byte: the answer would take tens of seconds, every byte well within any socket timeout.
    rule = proxy.add_rule(Drip(0.05, part), method=method, path="/manifests/", times=None)
    with Registry(docker_config=tmp_path, timeout=2) as client:
        lookup = (
            (lambda: client.resolve(image, "v1")) if method == "HEAD" else (lambda: client.get_manifest(image, "v1"))
        )
        error, elapsed = timed_error(lookup)
        assert error.transient
        assert "did not answer in full within 2 s" in str(error)
        assert 1.9 <= elapsed < 4
        assert rule.hits == 1

        # The retry policy tries again after a timeout, each attempt bounded alone.
        policy = RetryPolicy(attempts=2, wait_seconds=0.2)
        error, elapsed = timed_error(lambda: policy.call(lookup, "look up"))
        assert "still failing after 2 attempts" in str(error)
        assert 4 <= elapsed < 7
        assert rule.hits == 3

        proxy.clear_rules()
        assert client.resolve(image, "v1") == digest


def test_a_loopback_name_gets_https_first_then_plain_http(
    proxy: FaultProxy, pushed: tuple[str, str], registry: RegistryServer, tmp_path: Path, resolver: Any
) -> None:
    repository, digest = pushed
    with Registry(docker_config=tmp_path, timeout=10) as client:
        # Through the proxy (which answers a TLS handshake in plain HTTP) and straight to the registry.
        for port in (proxy.port, registry.address.rsplit(":", 1)[1]):
            assert client.resolve(ImageName(f"{TEST_NAME}:{port}/{repository}"), "v1") == digest
    assert {entry.header("Host") for entry in proxy.requests} == {f"{TEST_NAME}:{proxy.port}"}


def test_https_to_the_plain_port_of_a_registry_off_loopback_fails_at_once(
    proxy: FaultProxy, pushed: tuple[str, str], tmp_path: Path, resolver: Callable[[list[str]], None]
) -> None:
    repository, _ = pushed
    resolver(["192.0.2.7"])
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=3, wait_seconds=1, sleep=sleeps.append)
    with Registry(docker_config=tmp_path, timeout=10) as client:
        image = ImageName(f"{TEST_NAME}:{proxy.port}/{repository}")
        error, _ = timed_error(lambda: policy.call(lambda: client.resolve(image, "v1"), "look up"))
    assert not error.transient
    assert sleeps == []
    assert f"{TEST_NAME}:{proxy.port} answered HTTPS in plain HTTP" in str(error)
    assert "Serve the registry over HTTPS" in str(error)
    assert proxy.requests == []


@pytest.fixture
def tls_proxy(registry: RegistryServer, tmp_path: Path) -> Iterator[FaultProxy]:
    """The proxy speaking HTTPS, with a self-signed certificate, in front of the plain-HTTP registry."""
    with FaultProxy(registry.address, tls=server_context(*self_signed(tmp_path / "tls"))) as server:
        yield server


def test_a_loopback_https_registry_is_used_with_its_certificate_unchecked(
    tls_proxy: FaultProxy, pushed: tuple[str, str], tmp_path: Path
) -> None:
    repository, digest = pushed
    with Registry(docker_config=tmp_path, timeout=10) as client:
        assert client.resolve(ImageName(f"{tls_proxy.address}/{repository}"), "v1") == digest
    assert tls_proxy.count("HEAD", "/manifests/v1", outcome=200) == 1


def test_an_untrusted_certificate_off_loopback_fails_at_once(
    tls_proxy: FaultProxy, pushed: tuple[str, str], tmp_path: Path, resolver: Callable[[list[str]], None]
) -> None:
    repository, _ = pushed
    resolver(["192.0.2.7"])
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=3, wait_seconds=1, sleep=sleeps.append)
    with Registry(docker_config=tmp_path, timeout=10) as client:
        image = ImageName(f"{TEST_NAME}:{tls_proxy.port}/{repository}")
        error, _ = timed_error(lambda: policy.call(lambda: client.resolve(image, "v1"), "look up"))
    assert not error.transient
    assert sleeps == []
    assert "is not trusted (certificate verify failed: self-signed certificate)" in str(error)
    assert tls_proxy.requests == []


def test_plain_http_to_the_tls_proxy_is_reset(tls_proxy: FaultProxy) -> None:
    with pytest.raises(ConnectionError):
        get(tls_proxy.address)
    assert tls_proxy.requests == []


def test_timeout_minutes_bounds_a_dripping_registry_in_the_action(
    proxy: FaultProxy, pushed: tuple[str, str], tmp_path: Path
) -> None:
    repository, _ = pushed
    reference = f"{proxy.address}/{repository}:v1"
    docker("image", "rm", reference)  # only the registry holds it: verify cannot fall back to the engine
    rule = proxy.add_rule(Drip(0.05, "body"), method="GET", path="/manifests/", times=None)
    started = time.monotonic()
    run = run_on_fixture(
        "verify",
        tmp_path / "verify",
        "push-default",
        {"image": reference, "sha": "a" * 40, "timeout-minutes": "0.05", "retry-attempts": "1"},
    )
    elapsed = time.monotonic() - started
    assert run.code == 1, run.log
    (error,) = run.errors()
    assert "did not answer in full within 3 s" in error
    assert rule.hits == 1
    # 3 s for the operation, and the start of Python and a look into the engine; dripped whole, the answer
    # would take over a minute.
    assert 3 <= elapsed < 20
