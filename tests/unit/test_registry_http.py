"""The registry client's HTTP transport against real sockets on 127.0.0.1: redirects, kept-alive connections,
streamed bodies, TLS trust roots, proxies; and its rules, checked against what requests does with the same."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import requests.utils
from certificates import self_signed, server_context
from connect_proxy import ConnectProxy
from http_answers import QuietHandler

from buildonce.errors import RegistryError
from buildonce.references import ImageName
from buildonce.registry import http as transport
from buildonce.registry.auth import basic_authorization
from buildonce.registry.client import Registry
from buildonce.registry.proxies import proxy_for

MB = 1 << 20


# --- a server that answers as each test says -------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    """By lower-case name."""
    body: bytes
    body_sha256: str
    body_length: int


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer: Callable[[Seen], Answer], tls: Any = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.seen: list[Seen] = []
        self.connections = 0
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str = "/", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _Handler(QuietHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        server = self.server
        assert isinstance(server, Server)
        length = int(self.headers.get("Content-Length") or 0)
        digest, kept, left = hashlib.sha256(), b"", length
        while left:  # bounded by the length; read in pieces, as a registry stores an upload
            piece = self.rfile.read(min(left, 64 * 1024))
            if not piece:
                break
            digest.update(piece)
            kept = (kept + piece)[: 64 * 1024]
            left -= len(piece)
        headers = {key.lower(): value for key, value in self.headers.items()}
        seen = Seen(self.command, self.path, headers, kept, digest.hexdigest(), length - left)
        server.seen.append(seen)
        answer = server.answer(seen)
        self.answer(answer.status, answer.headers, answer.body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _serve  # noqa: N815 - the names http.server calls


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(answer: Callable[[Seen], Answer], tls: Any = None) -> Server:
        server = Server(answer, tls)
        server.thread.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def session() -> Iterator[Callable[..., transport.Session]]:
    made: list[transport.Session] = []

    def make(environ: dict[str, str] | None = None) -> transport.Session:
        made.append(transport.session({} if environ is None else environ))
        return made[-1]

    yield make
    for each in made:
        each.close()


def ask(made: transport.Session, method: str, url: str, seconds: float = 10, **kwargs: Any) -> transport.Response:
    return transport.bounded_request(made, method, url, time.monotonic() + seconds, **kwargs)


def ok(seen: Seen) -> Answer:
    return Answer(200, {"Content-Type": "text/plain"}, b"ok " + seen.path.encode())


# --- redirects ---------------------------------------------------------------------------------------------


def test_a_redirect_to_another_host_drops_the_credentials(
    serve: Callable[..., Server], session: Callable[..., transport.Session]
) -> None:
    storage = serve(ok)
    registry = serve(lambda seen: Answer(307, {"Location": storage.url("/blob?sig=1", host="localhost")}))
    response = ask(session(), "GET", registry.url("/v2/a/blobs/x"), headers={"Authorization": "Bearer secret"})
    assert response.status_code == 200
    assert response.content == b"ok /blob?sig=1"
    assert response.url == storage.url("/blob?sig=1", host="localhost")
    assert registry.seen[0].headers["authorization"] == "Bearer secret"
    (fetched,) = storage.seen
    assert "authorization" not in fetched.headers
    assert fetched.headers["host"] == f"localhost:{storage.port}"


def test_a_redirect_on_the_same_host_keeps_the_credentials_and_resolves_a_relative_location(
    serve: Callable[..., Server], session: Callable[..., transport.Session]
) -> None:
    def answer(seen: Seen) -> Answer:
        if seen.path == "/v2/a/blobs/x":
            return Answer(302, {"Location": "../storage/x?part=1"})
        return ok(seen)

    server = serve(answer)
    response = ask(session(), "GET", server.url("/v2/a/blobs/x"), auth=("user", "pass"))
    assert response.content == b"ok /v2/a/storage/x?part=1"
    assert [seen.path for seen in server.seen] == ["/v2/a/blobs/x", "/v2/a/storage/x?part=1"]
    assert {seen.headers["authorization"] for seen in server.seen} == {basic_authorization("user", "pass")}


def test_a_redirect_loop_ends_with_an_error_after_the_last_hop(
    serve: Callable[..., Server], session: Callable[..., transport.Session]
) -> None:
    server = serve(lambda seen: Answer(301, {"Location": "/again"}))
    with pytest.raises(transport.TooManyRedirectsError, match="Exceeded 10 redirects"):
        ask(session(), "GET", server.url("/start"))
    assert len(server.seen) == transport.MAX_REDIRECTS + 1

    server.seen.clear()
    with Registry(docker_config=None) as client, pytest.raises(RegistryError) as caught:
        client.resolve(ImageName(f"127.0.0.1:{server.port}/team/app"), "v1")
    assert not caught.value.transient
    assert "TooManyRedirectsError" in str(caught.value)


@pytest.mark.parametrize("location", ["http://127.0.0.1:99999/blob", "http://[::1/blob", "http://a..b/blob"])
def test_a_redirect_to_a_url_that_cannot_be_asked_is_a_permanent_registry_error(
    serve: Callable[..., Server], location: str
) -> None:
    server = serve(lambda seen: Answer(307, {"Location": location}))
    with Registry(docker_config=None) as client, pytest.raises(RegistryError) as caught:
        client.resolve(ImageName(f"127.0.0.1:{server.port}/team/app"), "v1")
    assert not caught.value.transient
    assert "cannot ask" in str(caught.value)


def test_a_host_no_name_lookup_can_take_is_a_permanent_registry_error() -> None:
    with Registry(docker_config=None) as client, pytest.raises(RegistryError) as caught:
        client.resolve(ImageName(f"{'a' * 64}.example/team/app"), "v1")
    assert not caught.value.transient
    assert "cannot ask" in str(caught.value)


def test_303_turns_a_post_into_a_get_without_its_body(
    serve: Callable[..., Server], session: Callable[..., transport.Session]
) -> None:
    server = serve(lambda seen: Answer(303, {"Location": "/done"}) if seen.method == "POST" else ok(seen))
    response = ask(session(), "POST", server.url("/token"), data={"grant_type": "refresh_token", "scope": "a b"})
    assert response.content == b"ok /done"
    post, get = server.seen
    assert (post.method, post.body) == ("POST", b"grant_type=refresh_token&scope=a+b")
    assert post.headers["content-type"] == "application/x-www-form-urlencoded"
    assert (get.method, get.body_length) == ("GET", 0)
    assert "content-type" not in get.headers
    assert "content-length" not in get.headers


def test_307_sends_a_file_body_again_from_its_start(
    serve: Callable[..., Server], session: Callable[..., transport.Session], tmp_path: Path
) -> None:
    data = os.urandom(3 * MB)
    path = tmp_path / "blob"
    path.write_bytes(data)
    server = serve(lambda seen: Answer(307, {"Location": "/stored"}) if seen.path == "/upload" else Answer(201))
    with path.open("rb") as body:
        response = ask(session(), "PUT", server.url("/upload"), data=body)
    assert response.status_code == 201
    first, second = server.seen
    assert [seen.method for seen in server.seen] == ["PUT", "PUT"]
    assert first.body_sha256 == second.body_sha256 == hashlib.sha256(data).hexdigest()
    assert second.headers["content-length"] == str(len(data))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("https://ghcr.io/v2/a", "https://pkg-containers.githubusercontent.com/x"),
        ("https://ghcr.io/v2/a", "https://ghcr.io/v2/b"),
        ("https://ghcr.io/v2/a", "https://ghcr.io:443/v2/b"),
        ("https://ghcr.io/v2/a", "https://ghcr.io:8443/v2/b"),
        ("https://ghcr.io/v2/a", "http://ghcr.io/v2/b"),
        ("http://ghcr.io/v2/a", "https://ghcr.io/v2/b"),
        ("http://ghcr.io:80/v2/a", "https://ghcr.io:443/v2/b"),
        ("http://127.0.0.1:5000/a", "http://localhost:5000/a"),
        ("http://127.0.0.1:5000/a", "http://127.0.0.1:5001/a"),
    ],
)
def test_credentials_are_dropped_on_a_redirect_exactly_where_requests_drops_them(old: str, new: str) -> None:
    assert transport._strips_authorization(old, new) is requests.Session().should_strip_auth(old, new)  # type: ignore[no-untyped-call]


# --- connections, bodies, answers --------------------------------------------------------------------------


def test_two_requests_share_one_kept_alive_connection_and_threads_share_the_pool(
    serve: Callable[..., Server], session: Callable[..., transport.Session]
) -> None:
    server = serve(ok)
    made = session()
    assert ask(made, "GET", server.url("/one")).content == b"ok /one"
    assert ask(made, "HEAD", server.url("/two")).content == b""
    assert server.connections == 1

    results: list[bytes] = []

    def look(index: int) -> None:
        results.extend(ask(made, "GET", server.url(f"/t{index}/{round_}")).content for round_ in range(5))

    threads = [threading.Thread(target=look, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == sorted(f"ok /t{index}/{round_}".encode() for index in range(6) for round_ in range(5))
    assert server.connections <= 1 + 6, "each thread holds one connection at a time, and reuses it"


def test_a_connection_the_server_closed_is_not_reused(
    serve: Callable[..., Server], session: Callable[..., transport.Session]
) -> None:
    server = serve(lambda seen: Answer(200, {"Connection": "close"}, b"bye"))
    made = session()
    assert ask(made, "GET", server.url("/a")).content == b"bye"
    assert ask(made, "GET", server.url("/b")).content == b"bye"
    assert server.connections == 2


def test_a_file_body_is_streamed_not_read_into_memory(
    serve: Callable[..., Server], session: Callable[..., transport.Session], tmp_path: Path
) -> None:
    size = 32 * MB
    path = tmp_path / "layer"
    with path.open("wb") as out:
        for _ in range(size // MB):
            out.write(os.urandom(MB))
    server = serve(lambda seen: Answer(201))
    made = session()
    tracemalloc.start()
    try:
        with path.open("rb") as body:
            response = ask(made, "PUT", server.url("/upload?digest=x"), 60, data=body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 201
    (seen,) = server.seen
    assert seen.headers["content-length"] == str(size)
    assert "transfer-encoding" not in seen.headers
    assert seen.body_length == size
    assert seen.body_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert peak < 4 * MB, f"sending {size} bytes held {peak} at once"


def test_answers_have_case_insensitive_headers_links_json_and_decoded_bodies(
    serve: Callable[..., Server], session: Callable[..., transport.Session]
) -> None:
    def answer(seen: Seen) -> Answer:
        return Answer(
            200,
            {"Content-Encoding": "gzip", "Link": '</v2/a/tags/list?n=2&last=b>; rel="next"', "X-Twice": "one"},
            gzip.compress(b'{"tags": ["a", "b"]}'),
        )

    server = serve(answer)
    response = ask(session(), "GET", server.url("/v2/a/tags/list"), params=[("n", "2")])
    assert response.json() == {"tags": ["a", "b"]}
    assert response.headers["content-encoding"] == response.headers["Content-Encoding"] == "gzip"
    assert response.links["next"]["url"] == "/v2/a/tags/list?n=2&last=b"
    (seen,) = server.seen
    assert seen.path == "/v2/a/tags/list?n=2"
    assert seen.headers["user-agent"] == "buildonce"
    assert seen.headers["accept-encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    "value",
    [
        '</a?n=1>; rel="next"',
        '<https://x.test/a>; rel=next, <https://x.test/b>; rel="prev"; type="text/html"',
        "<https://x.test/a>",
        "",
        "  ",
        "<broken; rel=",
    ],
)
def test_link_headers_parse_as_requests_parses_them(value: str) -> None:
    assert transport.parse_links(value) == requests.utils.parse_header_links(value)


@pytest.mark.parametrize(
    "url",
    [
        "https://ghcr.io/v2/team/app/manifests/sha256:ab",
        "https://r.test/v2/a/blobs/uploads/1?_state=a%2Fb%3D&digest=sha256:1",
        "https://r.test/a b/c",
        "https://r.test/100%",
        "https://r.test/%7Euser/%41",
    ],
)
def test_urls_are_quoted_as_requests_quotes_them(url: str) -> None:
    assert transport.requote_uri(url) == requests.utils.requote_uri(url)


class Raw:
    """Answers every connection with ``answer`` as it stands, then closes: for answers no server would send."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(self.answer)

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
        self.thread.join(5)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", "Connection broken"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123", "Connection broken"),
        (b"", "Remote end closed connection"),
        (b"NOT HTTP AT ALL\r\n\r\n", "Connection aborted"),
    ],
    ids=["short body", "short chunked body", "closed without an answer", "not http"],
)
def test_an_answer_cut_short_is_never_used_and_stays_transient(answer: bytes, reason: str) -> None:
    server = Raw(answer)  # a loopback registry: HTTPS first, which fails, then plain HTTP
    try:
        with Registry(docker_config=None, timeout=10) as client, pytest.raises(RegistryError) as caught:
            client.get_manifest(ImageName(f"{server.address}/team/app"), "v1")
    finally:
        server.stop()
    assert caught.value.transient
    assert f"cannot talk to {server.address} ({reason})" in str(caught.value)


# --- TLS -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"), ("127.0.0.1",))


def test_tls_is_verified_against_requests_ca_bundle_and_the_host_name(
    serve: Callable[..., Server], session: Callable[..., transport.Session], certificate: tuple[Path, Path]
) -> None:
    server = serve(ok, tls=server_context(*certificate))
    trusted = session({"REQUESTS_CA_BUNDLE": str(certificate[0])})
    assert ask(trusted, "GET", server.url("/a", scheme="https")).content == b"ok /a"

    with pytest.raises(transport.TLSError, match=r"certificate verify failed: self-signed certificate"):
        ask(session(), "GET", server.url("/b", scheme="https"))  # certifi's roots do not hold it
    with pytest.raises(transport.TLSError, match=r"certificate verify failed: (Hostname|IP address) mismatch"):
        ask(trusted, "GET", server.url("/c", scheme="https", host="localhost"))
    assert ask(session(), "GET", server.url("/d", scheme="https", host="localhost"), verify=False).status_code == 200
    assert [seen.path for seen in server.seen] == ["/a", "/d"]


def test_the_default_trust_roots_are_certifis_as_for_requests() -> None:
    import certifi

    assert transport.ca_bundle({}) == certifi.where() == requests.utils.DEFAULT_CA_BUNDLE_PATH
    assert transport.ca_bundle({"CURL_CA_BUNDLE": "/b"}) == "/b"
    assert transport.ca_bundle({"REQUESTS_CA_BUNDLE": "/a", "CURL_CA_BUNDLE": "/b"}) == "/a"


# --- proxies -----------------------------------------------------------------------------------------------


def test_https_goes_through_a_connect_tunnel_with_proxy_credentials(
    serve: Callable[..., Server], session: Callable[..., transport.Session], certificate: tuple[Path, Path]
) -> None:
    server = serve(ok, tls=server_context(*certificate))
    with ConnectProxy(("proxy-user", "proxy:pass")) as proxy:
        address = proxy.url.removeprefix("http://")
        environ = {
            "HTTPS_PROXY": f"http://proxy-user:proxy%3Apass@{address}",
            "REQUESTS_CA_BUNDLE": str(certificate[0]),
        }
        made = session(environ)
        assert ask(made, "GET", server.url("/through", scheme="https")).content == b"ok /through"
        assert ask(made, "GET", server.url("/again", scheme="https")).content == b"ok /again"
        (tunnel,) = proxy.seen  # one tunnel, kept alive for both requests
        assert (tunnel.method, tunnel.target) == ("CONNECT", f"127.0.0.1:{server.port}")
        assert tunnel.headers["proxy-authorization"] == basic_authorization("proxy-user", "proxy:pass")
        assert all("proxy-authorization" not in seen.headers for seen in server.seen)

        proxy.seen.clear()
        wrong = session({**environ, "HTTPS_PROXY": f"http://proxy-user:wrong@{address}"})
        with pytest.raises(transport.ProxyError, match="407"):
            ask(wrong, "GET", server.url("/denied", scheme="https"))

        direct = session({**environ, "NO_PROXY": "example.test,127.0.0.1"})
        assert ask(direct, "GET", server.url("/direct", scheme="https")).content == b"ok /direct"
        assert [seen.target for seen in proxy.seen] == [f"127.0.0.1:{server.port}"]  # only the denied one


def test_plain_http_goes_to_the_proxy_in_absolute_form(
    serve: Callable[..., Server], session: Callable[..., transport.Session]
) -> None:
    server = serve(ok)
    with ConnectProxy(("u", "p")) as proxy:
        made = session({"http_proxy": proxy.url.replace("http://", "http://u:p@"), "HTTPS_PROXY": "http://unused.test"})
        response = ask(made, "GET", server.url("/v2/"), headers={"Authorization": "Bearer t"})
        assert response.content == b"ok /v2/"
        (seen,) = proxy.seen
        assert (seen.method, seen.target) == ("GET", server.url("/v2/"))
        assert seen.headers["proxy-authorization"] == basic_authorization("u", "p")
        assert server.seen[0].headers["authorization"] == "Bearer t"
        assert "proxy-authorization" not in server.seen[0].headers


def test_the_registry_client_takes_its_proxy_from_the_environment(
    serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(lambda seen: Answer(200, {"Docker-Content-Digest": "sha256:" + "ab" * 32}))
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        for name in ("http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        with Registry(docker_config=None, timeout=10) as client:
            assert client.resolve(ImageName(f"127.0.0.1:{server.port}/team/app"), "v1") == "sha256:" + "ab" * 32
        # HTTPS first (no HTTPS_PROXY: direct), answered in plain HTTP, then plain HTTP through the proxy.
        assert [seen.target for seen in proxy.seen] == [server.url("/v2/team/app/manifests/v1")]


def test_an_https_proxy_carries_https_inside_its_own_tls_and_plain_http_in_absolute_form(
    serve: Callable[..., Server], session: Callable[..., transport.Session], certificate: tuple[Path, Path]
) -> None:
    secure = serve(ok, tls=server_context(*certificate))
    plain = serve(ok)
    with ConnectProxy(("u", "p"), tls=server_context(*certificate)) as proxy:
        address = proxy.url.removeprefix("https://")
        made = session(
            {
                "HTTPS_PROXY": f"https://u:p@{address}",
                "HTTP_PROXY": f"https://u:p@{address}",
                "REQUESTS_CA_BUNDLE": str(certificate[0]),  # the proxy's certificate and the server's
            }
        )
        body = os.urandom(2 * MB)  # many TLS records inside TLS records, both ways
        assert ask(made, "PUT", secure.url("/inside", scheme="https"), data=body).status_code == 200
        assert secure.seen[0].body_sha256 == hashlib.sha256(body).hexdigest()
        assert ask(made, "GET", secure.url("/again", scheme="https")).content == b"ok /again"
        assert ask(made, "GET", plain.url("/plain")).content == b"ok /plain"
        assert [(seen.method, seen.target) for seen in proxy.seen] == [
            ("CONNECT", f"127.0.0.1:{secure.port}"),
            ("GET", plain.url("/plain")),
        ]
        assert {seen.headers["proxy-authorization"] for seen in proxy.seen} == {basic_authorization("u", "p")}

        untrusted = session({"HTTPS_PROXY": f"https://u:p@{address}"})
        with pytest.raises(transport.TLSError, match="certificate verify failed"):
            ask(untrusted, "GET", secure.url("/x", scheme="https"))


def test_a_socks_proxy_is_refused_with_what_to_name_instead(session: Callable[..., transport.Session]) -> None:
    # requests needs PySocks for it, which is not installed: it never worked.
    with pytest.raises(transport.InvalidRequestError, match=r"name an http:// or https:// proxy"):
        ask(session({"HTTPS_PROXY": "socks5://127.0.0.1:1080"}), "GET", "https://127.0.0.1:1/")


PROXY_ENVIRONMENTS: list[dict[str, str]] = [
    {},
    {"HTTPS_PROXY": "http://p.test:3128"},
    {"https_proxy": "http://lower.test:3128", "HTTPS_PROXY": "http://upper.test:3128"},
    {"HTTP_PROXY": "http://p.test:3128", "ALL_PROXY": "http://all.test:1"},
    {"ALL_PROXY": "http://all.test:1"},
    {"HTTPS_PROXY": "http://p.test:3128", "NO_PROXY": "*"},
    {"HTTPS_PROXY": "http://p.test:3128", "NO_PROXY": "ghcr.io"},
    {"HTTPS_PROXY": "http://p.test:3128", "no_proxy": ".githubusercontent.com, example.test"},
    {"HTTPS_PROXY": "http://p.test:3128", "NO_PROXY": "127.0.0.0/8"},
    {"HTTPS_PROXY": "http://p.test:3128", "NO_PROXY": "127.0.0.1,localhost"},
    {"HTTPS_PROXY": "http://p.test:3128", "NO_PROXY": "registry.test:5000"},
    {"HTTPS_PROXY": "http://p.test:3128", "NO_PROXY": "io"},
    {"HTTPS_PROXY": "http://p.test:3128", "no_proxy": "", "NO_PROXY": "ghcr.io"},
]
PROXY_URLS = [
    "https://ghcr.io/v2/",
    "https://pkg-containers.githubusercontent.com/ghcr1/blobs/x",
    "https://127.0.0.1:5000/v2/",
    "http://127.0.0.1:5000/v2/",
    "https://localhost:5000/v2/",
    "https://registry.test:5000/v2/",
    "https://registry.test:5001/v2/",
    "https://[::1]:5000/v2/",
]


@pytest.mark.parametrize(
    "environ", PROXY_ENVIRONMENTS, ids=lambda environ: ",".join(f"{k}={v}" for k, v in environ.items())
)
def test_the_proxy_is_chosen_as_requests_chooses_it(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    for url in PROXY_URLS:
        expected = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
        assert proxy_for(url, dict(os.environ)) == expected, url
