"""HTTP for the registry client: requests that end by a deadline, and what Docker does for loopback registries.

A small HTTP/1.1 client on the standard library (``http.client``, ``ssl``, ``socket``), so that a command that
only talks to a registry does not import an HTTP library's worth of modules. It does what the registry client
needs and nothing else: kept-alive connections, redirects, TLS with the trust roots requests would use, the
proxies the environment names, and one deadline per request.

A socket timeout bounds each read, so a registry that drips its answer a byte at a time (the status line, the
headers or the body) would keep a request alive for ever. Here every request gets a deadline: a watchdog
shuts the connection's socket down when it passes, whatever the request is doing (connecting, the TLS
handshake, sending a body, waiting for headers or reading the body), and the request fails as
``DeadlineError``.

Docker treats a registry as insecure by default when its host is ``localhost`` or resolves to a loopback
address (127.0.0.0/8 or ::1): it asks over HTTPS without checking the certificate and, when the answer is
plain HTTP, asks again over plain HTTP. ``insecure_by_default`` is that rule.
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import functools
import heapq
import http.client
import io
import ipaddress
import itertools
import json
import os
import re
import select
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import IO, Any, TypeVar
from urllib.parse import quote, urlencode, urljoin, urlsplit

from buildonce.registry.auth import basic_authorization
from buildonce.registry.proxies import DEFAULT_PORTS, parse_proxy, proxy_for

_PLAIN_HTTP_ANSWERS = (
    "wrong version number",  # OpenSSL up to 3.1, reading "HTTP/1.1 400" as a TLS record
    "record layer failure",  # OpenSSL 3.2 and later, likewise
    "packet length too long",
    "unknown protocol",
    "http request",
)
"""How OpenSSL reports a TLS handshake answered by a server that speaks plain HTTP."""

_HTTPS_PORT_ANSWERS = ("http request to an https server", "plain http request was sent to https port")
"""What Go's net/http and nginx answer, in plain HTTP, to a plain-HTTP request on their HTTPS port."""

_TLS_PROBE_SECONDS = 5.0

TLS_HANDSHAKE_SECONDS = 10.0
"""How long the HTTPS attempt at a registry Docker treats as insecure may take to connect, as containerd's
TLS handshake timeout: a plain-HTTP server may sit waiting for a request line that a ClientHello never ends."""

MAX_REDIRECTS = 10
"""Redirects followed for one request, as Go's net/http (Docker's client) follows; the next one is an error."""

IDLE_PER_HOST = 10
"""Kept-alive connections kept per host (scheme, host, port, TLS verification, proxy), as requests keeps."""

HOSTS_KEPT = 10
"""Hosts whose idle connections are kept; the least recently used one's are closed beyond that."""

_BLOCK = 64 * 1024
"""How much of a file body is read and sent at a time."""

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_T = TypeVar("_T")


# --- what can go wrong ------------------------------------------------------------------------------------


class DeadlineError(Exception):
    """The request's deadline passed before its answer was complete."""


class TransportError(Exception):
    """The request got no usable answer."""


class ConnectError(TransportError):
    """The connection could not be made, or broke before the answer's head: refused, reset, closed."""


class ConnectTimeoutError(ConnectError):
    """Connecting (the TCP connection, any proxy tunnel and TLS handshake) took longer than allowed."""


class TLSError(ConnectError):
    """The TLS handshake or a TLS record failed; the text is OpenSSL's (``[SSL: …] reason (_ssl.c:…)``)."""


class ProxyError(ConnectError):
    """The proxy the environment names refused or failed to open a tunnel."""


class BrokenAnswerError(TransportError):
    """The answer's body ended or broke off before it was complete."""


class TooManyRedirectsError(TransportError):
    """More than ``MAX_REDIRECTS`` redirects for one request."""


class ContentDecodingError(TransportError):
    """The answer's body does not decode as its ``Content-Encoding`` says."""


class InvalidRequestError(TransportError):
    """The request cannot be sent as asked: a URL or header it cannot carry, or a proxy it cannot use."""


# --- the deadline ---------------------------------------------------------------------------------------------


class _Watch:
    """The connections one request uses; ``fire`` shuts them down from the watchdog's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: list[_Connection] = []
        self._done = False
        self.fired = False

    def enlist(self, connection: _Connection) -> None:
        """Watch ``connection``; called again whenever it has a new socket. Cut at once when already fired."""
        with self._lock:
            if connection not in self._connections:
                self._connections.append(connection)
            fired = self.fired
        if fired:
            _cut(connection)

    def release(self, connection: _Connection) -> bool:
        """Stop watching ``connection`` (it goes back to the pool, for any thread); False when already fired."""
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)
            return not self.fired

    def fire(self) -> None:
        with self._lock:  # cut under the lock: a released connection, maybe another request's by now, never is
            if self._done:
                return
            self.fired = True
            for connection in self._connections:
                _cut(connection)

    def finish(self) -> None:
        with self._lock:
            self._done = True

    @property
    def done(self) -> bool:
        with self._lock:
            return self._done


def _cut(connection: _Connection) -> None:
    """Wake whatever is blocked on the connection's socket; its own thread then fails and closes it.

    ``shutdown``, not ``close``: closing the descriptor under a blocked call could let it be reused. The plain
    socket method is called even on a TLS socket, so that no TLS state is touched from this thread.
    """
    sock = connection.watched
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One thread for the deadlines of every request in flight, rather than a timer thread per request.

    Each request adds its watch with its deadline; the thread fires the watches whose deadline passes before
    their request finishes. It runs only while a watch is pending: it ends when none is left, and the next
    request starts it again.
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._pending: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._running = False

    def add(self, deadline: float, watch: _Watch) -> None:
        with self._wake:
            heapq.heappush(self._pending, (deadline, next(self._order), watch))
            if self._running:
                self._wake.notify()
                return
            self._running = True
        threading.Thread(target=self._run, name="buildonce-deadlines", daemon=True).start()

    def finished(self) -> None:
        """A request finished: let the thread drop it (and end, when it was the last)."""
        with self._wake:
            self._wake.notify()

    def _run(self) -> None:
        while True:  # ends when no watch is pending; each pass drops or fires one, or waits for a deadline
            with self._wake:
                while self._pending and self._pending[0][2].done:
                    heapq.heappop(self._pending)
                if not self._pending:
                    self._running = False
                    return
                deadline, _, watch = self._pending[0]
                left = deadline - time.monotonic()
                if left > 0:
                    self._wake.wait(left)
                    continue
                heapq.heappop(self._pending)
            watch.fire()


_WATCHDOG = _Watchdog()


@contextlib.contextmanager
def _watching(seconds: float) -> Iterator[_Watch]:
    watch = _Watch()
    _WATCHDOG.add(time.monotonic() + seconds, watch)
    try:
        yield watch
    finally:
        watch.finish()
        _WATCHDOG.finished()


# --- answers ----------------------------------------------------------------------------------------------


class Headers(Mapping[str, str]):
    """Header fields by case-insensitive name; a field sent more than once reads as its values joined by ``, ``."""

    def __init__(self, fields: Sequence[tuple[str, str]] = ()) -> None:
        self._fields: dict[str, tuple[str, str]] = {}
        for name, value in fields:
            key = name.lower()
            earlier = self._fields.get(key)
            self._fields[key] = (name, f"{earlier[1]}, {value}" if earlier else value)

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._fields.values())

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({list(self._fields.values())!r})"


class Response:
    """A whole answer: its status, header fields, body (read to its end, decoded) and the URL that gave it."""

    def __init__(
        self, *, method: str, url: str, status_code: int, reason: str, headers: Headers, content: bytes
    ) -> None:
        self.method = method
        self.url = url
        self.status_code = status_code
        self.reason = reason
        self.headers = headers
        self.content = content

    def json(self) -> Any:
        """The body as JSON; raises ``ValueError`` when it is not."""
        return json.loads(self.content)

    @property
    def links(self) -> dict[str, dict[str, str]]:
        """The ``Link`` header's links by ``rel`` (else by URL), each with its ``url`` and parameters."""
        value = self.headers.get("Link")
        found: dict[str, dict[str, str]] = {}
        for link in parse_links(value) if value else []:
            found[link.get("rel") or link["url"]] = link
        return found

    def close(self) -> None:
        """Nothing to release: the body was read whole and the connection went back to the pool."""

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}] {self.method} {self.url}>"


def parse_links(value: str) -> list[dict[str, str]]:
    """A ``Link`` header's links, parsed as requests parses them."""
    links: list[dict[str, str]] = []
    strip = " '\""
    value = value.strip(strip)
    for part in re.split(", *<", value) if value else []:
        url, _, params = part.partition(";")
        link = {"url": url.strip("<> '\"")}
        for param in params.split(";") if params else []:
            key, sep, found = param.partition("=")
            if not sep or "=" in found:
                break
            link[key.strip(strip)] = found.strip(strip)
        links.append(link)
    return links


def _decoded(body: bytes, encoding: str) -> bytes:
    """The body with its content codings (gzip, deflate) undone, last applied first."""
    codings = [token.strip().lower() for token in encoding.split(",") if token.strip()]
    try:
        for coding in reversed(codings):
            body = _undo(coding, body)
    except zlib.error as exc:
        raise ContentDecodingError(f"the body does not decode as {encoding}: {exc}") from exc
    return body


def _undo(coding: str, body: bytes) -> bytes:
    if coding in ("gzip", "x-gzip"):
        return _gunzip(body)
    if coding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)  # raw deflate, as some servers send it
    return body  # identity, or a coding not asked for: the bytes as they came, as requests keeps them


def _gunzip(body: bytes) -> bytes:
    out = []
    while body:  # bounded: each member consumes bytes, or the loop ends
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out.append(decompressor.decompress(body))
        out.append(decompressor.flush())
        if not decompressor.eof:
            raise zlib.error("the gzip stream ends early")
        body = decompressor.unused_data.lstrip(b"\0")
    return b"".join(out)


# --- what a request is ------------------------------------------------------------------------------------

Body = bytes | IO[bytes] | None


@dataclass(frozen=True)
class _Request:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: Body = None
    body_start: int | None = None
    """Where a file body starts, to send it again after a 307 or 308."""

    def without(self, *names: str) -> tuple[tuple[str, str], ...]:
        dropped = {name.lower() for name in names}
        return tuple((key, value) for key, value in self.headers if key.lower() not in dropped)


def _merged(*layers: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """Header fields, later layers replacing earlier ones by case-insensitive name, in first-seen order."""
    fields: dict[str, tuple[str, str]] = {}
    for layer in layers:
        for name, value in (layer or {}).items():
            fields[name.lower()] = (fields.get(name.lower(), (name, ""))[0], value)
    return list(fields.values())


def _request(
    defaults: Mapping[str, str],
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None,
    data: Body | Mapping[str, str],
    params: Sequence[tuple[str, str]] | None,
    auth: tuple[str, str] | None,
) -> _Request:
    method = method.upper()
    if params:
        parts = urlsplit(url)
        query = "&".join(part for part in (parts.query, urlencode(list(params))) if part)
        url = parts._replace(query=query).geturl()
    extra: dict[str, str] = {}
    body: Body
    if isinstance(data, Mapping):
        body = urlencode(list(data.items())).encode("ascii")
        extra["Content-Type"] = "application/x-www-form-urlencoded"
    else:
        body = data
    fields = _merged(defaults, extra, headers)
    if auth is not None:
        fields = _merged(dict(fields), {"Authorization": basic_authorization(*auth)})
    names = {name.lower() for name, _ in fields}
    start = None
    if isinstance(body, bytes):
        length: int | None = len(body)
    elif body is not None:
        start = body.tell()
        length = os.fstat(body.fileno()).st_size - start
    else:
        length = None if method in ("GET", "HEAD") else 0
    if length is not None and "content-length" not in names:
        fields.append(("Content-Length", str(length)))
    return _Request(method, requote_uri(url), tuple(fields), body, start)


def _redirected(request: _Request, response: Response) -> _Request:
    """The request a redirect asks for, as requests makes it: the method a browser would use, the body only
    for 307 and 308, and no credentials for another host, port or scheme."""
    location = response.headers["Location"]
    with contextlib.suppress(UnicodeError):
        location = location.encode("latin-1").decode("utf-8")
    if location.startswith("//"):
        location = f"{urlsplit(response.url).scheme}:{location}"
    url = urljoin(response.url, requote_uri(location)) if not urlsplit(location).netloc else requote_uri(location)
    method = request.method
    status = response.status_code
    if (status in (302, 303) and method != "HEAD") or (status == 301 and method == "POST"):
        method = "GET"
    dropped = ["Cookie"]
    body, start = request.body, request.body_start
    if status not in (307, 308):
        dropped += ["Content-Length", "Content-Type", "Transfer-Encoding"]
        body, start = None, None
    elif start is not None and body is not None and not isinstance(body, bytes):
        body.seek(start)
    if _strips_authorization(request.url, url):
        dropped.append("Authorization")
    return replace(request, method=method, url=url, headers=request.without(*dropped), body=body, body_start=start)


def _strips_authorization(old: str, new: str) -> bool:
    """requests' rule: keep the credentials only for the same host, scheme and port (or http to https on the
    default ports)."""
    before, after = urlsplit(old), urlsplit(new)
    if before.hostname != after.hostname:
        return True
    if before.scheme == "http" and before.port in (80, None) and after.scheme == "https" and after.port in (443, None):
        return False
    changed_port = before.port != after.port
    changed_scheme = before.scheme != after.scheme
    default = (DEFAULT_PORTS.get(before.scheme), None)
    if not changed_scheme and before.port in default and after.port in default:
        return False
    return changed_port or changed_scheme


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def requote_uri(uri: str) -> str:
    """``uri`` quoted as requests quotes it: what must be escaped is, what already is stays as it is."""
    parts = uri.split("%")
    try:
        for index in range(1, len(parts)):
            pair = parts[index][:2]
            if len(pair) == 2 and pair.isalnum():
                char = chr(int(pair, 16))
                parts[index] = char + parts[index][2:] if char in _UNRESERVED else f"%{parts[index]}"
            else:
                parts[index] = f"%{parts[index]}"
    except ValueError:  # a "%" that starts no escape: quote it too
        return quote(uri, safe="!#$&'()*+,/:;=?@[]~")
    return quote("".join(parts), safe="!#$%&'()*+,/:;=?@[]~")


# --- TLS ----------------------------------------------------------------------------------------------------

_contexts: dict[tuple[str, bool] | None, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def ca_bundle(environ: Mapping[str, str]) -> str:
    """The trust roots requests would use: ``REQUESTS_CA_BUNDLE``, else ``CURL_CA_BUNDLE``, else certifi's."""
    return environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE") or _certifi_bundle()


def _certifi_bundle() -> str:
    """certifi's ``cacert.pem``, the file ``certifi.where()`` names, found without importing certifi (its import
    costs more than the lookup; it is installed as requests' dependency)."""
    import importlib.util  # only for a verified TLS connection

    spec = importlib.util.find_spec("certifi")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(location, "cacert.pem")  # noqa: PTH118
        if os.path.isfile(path):  # noqa: PTH113
            return path
    raise InvalidRequestError(
        "certifi's CA certificates (cacert.pem) are not installed as a file: point REQUESTS_CA_BUNDLE at the CA "
        "certificates to trust"
    )


def _tls_context(verify: bool, environ: Mapping[str, str]) -> ssl.SSLContext:
    """One context per set of trust roots (loading them costs milliseconds), as urllib3 configures one."""
    key: tuple[str, bool] | None = None
    if verify:
        location = ca_bundle(environ)
        if not os.path.exists(location):  # noqa: PTH110
            raise InvalidRequestError(f"Could not find a suitable TLS CA certificate bundle, invalid path: {location}")
        key = (location, os.path.isdir(location))  # noqa: PTH112
    with _contexts_lock:
        context = _contexts.get(key)
        if context is None:
            context = _contexts[key] = _new_context(key)
    return context


def _new_context(roots: tuple[str, bool] | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(["http/1.1"])
    context.hostname_checks_common_name = False
    if roots is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        location, is_directory = roots
        if is_directory:
            context.load_verify_locations(capath=location)
        else:
            context.load_verify_locations(cafile=location)
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog:
        context.keylog_filename = keylog
    return context


# --- connections and the pool -------------------------------------------------------------------------------


class _Connection(http.client.HTTPConnection):
    """One HTTP/1.1 connection, direct or through a proxy, TLS or not, whose socket a watch can cut."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        tls: ssl.SSLContext | None,
        server_name: str,
        tunnel: tuple[tuple[str, int], str | None] | None,
        proxy_tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(address[0], address[1], blocksize=_BLOCK)
        self._tls = tls
        self._server_name = server_name
        self._tunnel_to = tunnel
        self._proxy_tls = proxy_tls
        """TLS to the proxy itself, for an https:// proxy."""
        self.watched: socket.socket | None = None
        """The socket the watch cuts; kept after ``close`` hands it to an answer read to the end of stream."""
        self.watch: _Watch | None = None

    def _expose(self, sock: socket.socket) -> None:
        self.sock = self.watched = sock
        if self.watch is not None:
            self.watch.enlist(self)  # cuts at once when the deadline passed meanwhile

    def connect(self) -> None:
        try:
            raw = socket.create_connection((self.host, self.port), self.timeout)
        except TimeoutError:
            raise ConnectTimeoutError(
                f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from None
        except OSError as exc:
            raise ConnectError(f"Failed to establish a new connection: {exc}") from exc
        self._expose(raw)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = raw
            if self._proxy_tls is not None:
                sock = self._proxy_tls.wrap_socket(raw, server_hostname=self.host, do_handshake_on_connect=False)
                self._expose(sock)
                sock.do_handshake()
            if self._tunnel_to is not None:
                self._open_tunnel(sock, *self._tunnel_to)
            if self._tls is not None and isinstance(sock, ssl.SSLSocket):
                inner = _TunnelledTLS(sock, self._tls, self._server_name)
                self.sock = inner  # socket-like; the watch still cuts the outer socket
                inner.do_handshake()
            elif self._tls is not None:
                wrapped = self._tls.wrap_socket(raw, server_hostname=self._server_name, do_handshake_on_connect=False)
                self._expose(wrapped)
                wrapped.do_handshake()
        except TimeoutError:
            raise ConnectTimeoutError(
                f"Connection to {self._server_name} timed out. (connect timeout={self.timeout})"
            ) from None
        except ssl.SSLError as exc:
            raise TLSError(str(exc)) from exc

    def _open_tunnel(self, sock: socket.socket, target: tuple[str, int], authorization: str | None) -> None:
        host, port = target
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        if authorization:
            head += f"Proxy-Authorization: {authorization}\r\n"
        sock.sendall((head + "\r\n").encode("latin-1"))
        answer = http.client.HTTPResponse(sock, method="CONNECT")
        try:
            answer.begin()
        except http.client.HTTPException as exc:
            raise ProxyError(f"Unable to connect to proxy: {exc!r}") from exc
        finally:
            answer.close()  # the tunnel's bytes are read by the TLS layer from the socket itself
        if answer.status != 200:
            raise ProxyError(f"Unable to connect to proxy: Tunnel connection failed: {answer.status} {answer.reason}")

    def dropped(self) -> bool:
        """Whether the server closed (or wrote on) this idle connection: it cannot carry another request."""
        sock = self.sock
        if sock is None:
            return True
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(sock, select.POLLIN)
                return bool(poller.poll(0))
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True


class _TunnelledTLS:
    """TLS with the server inside the TLS with an https:// proxy: ``ssl`` wraps only plain sockets, so the
    inner layer runs over memory buffers, its records carried by the outer socket. Socket-like as far as
    ``http.client`` uses a socket (``sendall``, ``makefile``, ``close``); closed once its reader is too."""

    def __init__(self, outer: ssl.SSLSocket, context: ssl.SSLContext, server_name: str) -> None:
        self._outer = outer
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_name)
        self._readers = 0
        self._closed = False

    def _run(self, operation: Callable[[], _T]) -> _T:
        while True:  # bounded by the socket's timeout (the deadline): each pass moves bytes, or fails
            try:
                result = operation()
            except ssl.SSLWantReadError:
                self._flush()
                data = self._outer.recv(_BLOCK)
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._outer.sendall(data)

    def do_handshake(self) -> None:
        self._run(self._tls.do_handshake)

    def sendall(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        while view:  # bounded: each write takes some bytes
            sent = self._run(functools.partial(self._tls.write, view))
            view = view[sent:]

    def recv_into(self, buffer: Any) -> int:
        try:
            count: Any = self._run(lambda: self._tls.read(len(buffer), buffer))  # with a buffer: a count
        except ssl.SSLZeroReturnError:
            return 0
        return int(count)

    def makefile(self, mode: str = "rb") -> io.BufferedReader:
        self._readers += 1
        return io.BufferedReader(_TunnelReader(self))

    def settimeout(self, seconds: float | None) -> None:
        self._outer.settimeout(seconds)

    def fileno(self) -> int:
        return self._outer.fileno()

    def reader_closed(self) -> None:
        self._readers -= 1
        if self._closed and self._readers <= 0:
            self._outer.close()

    def close(self) -> None:
        self._closed = True
        if self._readers <= 0:
            self._outer.close()


class _TunnelReader(io.RawIOBase):
    def __init__(self, sock: _TunnelledTLS) -> None:
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._sock.recv_into(buffer)

    def close(self) -> None:
        if not self.closed:
            self._sock.reader_closed()
        super().close()


_Key = tuple[str, str, int, bool, str]


class _Pool:
    """Idle kept-alive connections by (scheme, host, port, TLS verification, proxy); safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: collections.OrderedDict[_Key, list[_Connection]] = collections.OrderedDict()

    def take(self, key: _Key) -> _Connection | None:
        while True:  # bounded: each pass removes one connection from the list
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                connection = idle.pop()
            if not connection.dropped():
                return connection
            connection.close()

    def give(self, key: _Key, connection: _Connection) -> None:
        closing: list[_Connection] = []
        with self._lock:
            idle = self._idle.setdefault(key, [])
            self._idle.move_to_end(key)
            if len(idle) < IDLE_PER_HOST:
                idle.append(connection)
            else:
                closing.append(connection)
            while len(self._idle) > HOSTS_KEPT:
                closing += self._idle.popitem(last=False)[1]
        for each in closing:
            each.close()

    def close(self) -> None:
        with self._lock:
            idle = [connection for connections in self._idle.values() for connection in connections]
            self._idle.clear()
        for connection in idle:
            connection.close()


class Session:
    """Default header fields and the kept-alive connections of one client; used from any number of threads."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.headers: dict[str, str] = {
            "User-Agent": "buildonce",
            "Accept-Encoding": "gzip, deflate",
            "Accept": "*/*",
            "Connection": "keep-alive",
        }
        self._environ = environ
        self._pool = _Pool()

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def exchange(self, request: _Request, watch: _Watch, connect: float, deadline: float, verify: bool) -> Response:
        """``request`` and the redirects it leads to, one after another, all within ``deadline``."""
        for hop in range(MAX_REDIRECTS + 1):
            response = self._once(request, watch, connect, deadline, verify)
            if response.status_code not in _REDIRECTS or "Location" not in response.headers:
                return response
            if hop == MAX_REDIRECTS:
                raise TooManyRedirectsError(
                    f"Exceeded {MAX_REDIRECTS} redirects (the last to {response.headers['Location']})."
                )
            request = _redirected(request, response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, request: _Request, watch: _Watch, connect: float, deadline: float, verify: bool) -> Response:
        parts = urlsplit(request.url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise InvalidRequestError(f"No connection adapters were found for {request.url!r}")
        host = parts.hostname
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError:
            raise InvalidRequestError(f"Invalid URL {request.url!r}: bad port") from None
        if not host:
            raise InvalidRequestError(f"Invalid URL {request.url!r}: No host supplied")
        named = proxy_for(request.url, self.environ)
        try:
            proxy = parse_proxy(named) if named else None
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc
        secure = scheme == "https"
        key: _Key = (scheme, host, port, secure and verify, proxy.key if proxy else "")
        connection = self._pool.take(key)
        if connection is None:
            tls = _tls_context(verify, self.environ) if secure else None
            tunnel = ((host, port), proxy.authorization) if proxy and secure else None
            address = (proxy.host, proxy.port) if proxy else (host, port)
            # An https:// proxy's own certificate is checked as the registry's would be (as requests does).
            proxy_tls = _tls_context(verify, self.environ) if proxy and proxy.scheme == "https" else None
            connection = _Connection(address, tls=tls, server_name=host, tunnel=tunnel, proxy_tls=proxy_tls)
        connection.watch = watch
        watch.enlist(connection)
        authority = f"[{host}]" if ":" in host else host
        if port != DEFAULT_PORTS[scheme]:
            authority += f":{port}"
        target = parts._replace(scheme="", netloc="", fragment="").geturl() or "/"
        if not target.startswith("/"):
            target = "/" + target
        fields = [("Host", authority), *request.without("Host")]
        if proxy and not secure:
            target = f"{scheme}://{authority}{target}"  # absolute form, to the proxy
            if proxy.authorization:
                fields.append(("Proxy-Authorization", proxy.authorization))
        try:
            return self._converse(key, connection, request, _Exchange(target, fields, watch, connect, deadline))
        except BaseException:
            connection.watch = None
            connection.close()
            raise

    def _converse(self, key: _Key, connection: _Connection, request: _Request, exchange: _Exchange) -> Response:
        watch = exchange.watch
        if connection.sock is None:
            connection.timeout = max(0.001, min(exchange.connect, exchange.deadline - time.monotonic()))
            connection.connect()
        sock = connection.sock
        if watch.fired or sock is None:
            raise DeadlineError
        # The socket timeout cuts a silent server at the deadline; the watchdog, one that keeps trickling.
        sock.settimeout(max(0.001, exchange.deadline - time.monotonic()))
        with _mapped("Connection aborted."):
            try:
                connection.putrequest(request.method, exchange.target, skip_host=True, skip_accept_encoding=True)
                for name, value in exchange.fields:
                    connection.putheader(name, value)
            except (ValueError, http.client.InvalidURL) as exc:  # a URL or field http.client will not send
                raise InvalidRequestError(str(exc)) from exc
            connection.endheaders(request.body)
            answer = connection.getresponse()
        with _mapped("Connection broken:"):
            raw = answer.read()
        if watch.fired:
            raise DeadlineError  # an answer read to an end of stream the watchdog made can look complete
        headers = Headers(answer.getheaders())
        content = _decoded(raw, headers.get("Content-Encoding", "")) if raw else raw
        response = Response(
            method=request.method,
            url=request.url,
            status_code=answer.status,
            reason=answer.reason,
            headers=headers,
            content=content,
        )
        connection.watch = None
        if not watch.release(connection):
            raise DeadlineError
        if answer.will_close:
            connection.close()
        else:
            self._pool.give(key, connection)
        return response


@dataclass(frozen=True)
class _Exchange:
    """One request on the wire: its target and header fields, and the bounds it runs within."""

    target: str
    fields: list[tuple[str, str]]
    watch: _Watch
    connect: float
    deadline: float


@contextlib.contextmanager
def _mapped(broke: str) -> Iterator[None]:
    """Socket and protocol errors as the transport's: ``broke`` says whether the head or the body broke off."""
    try:
        yield
    except TimeoutError:
        raise DeadlineError from None  # the socket's timeout is the deadline
    except ssl.SSLError as exc:
        raise TLSError(str(exc)) from exc
    except (OSError, http.client.HTTPException) as exc:
        if broke == "Connection aborted.":
            raise ConnectError(broke, exc) from exc
        raise BrokenAnswerError(f"{broke} {exc!r}", exc) from exc


def session(environ: Mapping[str, str] | None = None) -> Session:
    """A session whose requests ``bounded_request`` ends at a deadline; proxies and trust roots come from
    ``environ`` (the process environment by default), read at each request as requests reads them."""
    return Session(environ)


def bounded_request(
    made: Session,
    method: str,
    url: str,
    deadline: float,
    *,
    connect_seconds: float | None = None,
    verify: bool = True,
    headers: Mapping[str, str] | None = None,
    data: Body | Mapping[str, str] = None,
    params: Sequence[tuple[str, str]] | None = None,
    auth: tuple[str, str] | None = None,
) -> Response:
    """One whole request (connection, body sent, headers and body read, redirects followed) ended by
    ``deadline`` (monotonic); connecting (with any tunnel and TLS handshake) takes at most ``connect_seconds``
    when given.

    ``data`` is the body: bytes, a binary file (streamed from where it stands, never read whole), or a form
    (sent URL-encoded). ``verify=False`` leaves the server's certificate unchecked.

    Raises ``DeadlineError`` when the deadline passes first, and a ``TransportError`` otherwise (a
    ``ConnectTimeoutError`` only when connecting took longer than ``connect_seconds``).
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineError
    connect = remaining if connect_seconds is None else min(remaining, connect_seconds)
    try:
        request = _request(made.headers, method, url, headers=headers, data=data, params=params, auth=auth)
    except ValueError as exc:  # UnicodeError too: a name IDNA cannot encode
        raise InvalidRequestError(f"cannot ask {url!r}: {exc}") from exc
    with _watching(remaining) as watch:
        try:
            response = made.exchange(request, watch, connect, deadline, verify)
        except ValueError as exc:
            # A host no name lookup can take (a label over 63 characters, an empty one) or a redirect to a URL
            # that does not parse (a port out of range, a broken IPv6 literal): the registry's answer, or the
            # image's name, is wrong, and no retry will change it.
            raise InvalidRequestError(f"cannot ask {request.url!r}: {exc}") from exc
        except ConnectTimeoutError:
            if watch.fired or time.monotonic() >= deadline - 0.01 or connect >= remaining:
                raise DeadlineError from None
            raise
        except (OSError, http.client.HTTPException, TransportError) as exc:
            if watch.fired:
                raise DeadlineError from exc
            if isinstance(exc, TransportError):
                raise
            raise ConnectError("Connection aborted.", exc) from exc
    if watch.fired:
        # Headers or a body cut short can look complete (an answer read to its end of stream): never use it.
        raise DeadlineError
    return response


# --- TLS and loopback registries ------------------------------------------------------------------------------


def addresses(host: str) -> list[str]:
    """The addresses ``host`` resolves to; none when it does not resolve."""
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return [str(entry[4][0]) for entry in found]


def _is_loopback_address(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def split_host(netloc: str) -> tuple[str, int | None]:
    """``host[:port]`` or ``[v6][:port]`` as host and port."""
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif netloc.count(":") == 1:
        host, _, port = netloc.partition(":")
    else:
        host, port = netloc, ""
    return host, int(port) if port.isascii() and port.isdigit() else None


def insecure_by_default(netloc: str, resolve: Callable[[str], list[str]] | None = None) -> bool:
    """Docker's rule: ``localhost``, or a host that is or resolves to an address in 127.0.0.0/8 or ::1."""
    host, _ = split_host(netloc)
    if host.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return any(_is_loopback_address(found) for found in (resolve or addresses)(host))
    return _is_loopback_address(host)


def answered_in_plain_http(exc: BaseException) -> bool:
    """Whether a TLS handshake failed because the server answered in plain HTTP."""
    text = str(exc).lower()
    return isinstance(exc, TLSError) and any(answer in text for answer in _PLAIN_HTTP_ANSWERS)


def is_certificate_error(exc: BaseException) -> bool:
    return isinstance(exc, TLSError) and "certificate" in str(exc).lower()


def says_https_port(body: bytes) -> bool:
    """Whether a plain-HTTP answer says the port wants HTTPS, as Go and nginx answer."""
    text = body[:2000].decode("utf-8", "replace").lower()
    return any(answer in text for answer in _HTTPS_PORT_ANSWERS)


def speaks_tls(netloc: str, deadline: float) -> bool:
    """Whether the server at ``host[:port]`` (port 80 by default) completes a TLS handshake, certificate unchecked.

    Asked only after a plain-HTTP request failed without an answer: a TLS server that closes on plain HTTP
    looks like a flaky one, and is told apart this way.
    """
    host, port = split_host(netloc)
    seconds = min(_TLS_PROBE_SECONDS, deadline - time.monotonic())
    if seconds <= 0:
        return False
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port or 80), timeout=seconds) as raw,
            context.wrap_socket(raw, server_hostname=host or None),
        ):
            return True
    except (OSError, ValueError):
        return False


# --- what a registry said ---------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, which holds either seconds or an HTTP-date."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # str.isdigit() also takes "²", which float() does not
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def registry_said(body: bytes, content_type: str = "") -> str:
    """What the registry said in its ``{"errors": [...]}`` body, in one line; empty when it said nothing."""
    if not body:
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        parts = []
        for error in data["errors"]:
            if not isinstance(error, dict):
                continue
            part = f"{error.get('code', 'UNKNOWN')}: {error.get('message', '')}".rstrip(": ")
            detail = error.get("detail")
            if detail:
                part += f" ({json.dumps(detail) if not isinstance(detail, str) else detail})"
            parts.append(part)
        return _shorten("; ".join(parts))
    if "html" in content_type:
        return ""
    return _shorten(body.decode("utf-8", "replace").strip().splitlines()[0]) if body.strip() else ""


def error_codes(body: bytes) -> set[str]:
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return set()
    if not isinstance(data, dict) or not isinstance(data.get("errors"), list):
        return set()
    return {str(error.get("code")) for error in data["errors"] if isinstance(error, dict)}


def _shorten(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
