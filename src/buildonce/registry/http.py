"""HTTP for the registry client: requests that end by a deadline, and what Docker does for loopback registries.

requests' own timeout bounds each socket read, so a registry that drips its answer a byte at a time (the
status line, the headers or the body) keeps a request alive for ever. Here every request gets a deadline: a
watchdog shuts the connection's socket down when it passes, whatever the request is doing (connecting,
sending a body, waiting for headers or reading the body), and the request fails as ``DeadlineError``.

Docker treats a registry as insecure by default when its host is ``localhost`` or resolves to a loopback
address (127.0.0.0/8 or ::1): it asks over HTTPS without checking the certificate and, when the answer is
plain HTTP, asks again over plain HTTP. ``insecure_by_default`` is that rule.
"""

from __future__ import annotations

import contextlib
import email.utils
import heapq
import ipaddress
import itertools
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager, ProxyManager

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


class DeadlineError(Exception):
    """The request's deadline passed before its answer was complete."""


# --- the deadline ---------------------------------------------------------------------------------------------


class _Watch:
    """The connections one request uses; ``fire`` shuts them down from the watchdog's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: list[HTTPConnection] = []
        self._done = False
        self.fired = False

    def enlist(self, connection: HTTPConnection) -> None:
        with self._lock:
            if connection not in self._connections:
                self._connections.append(connection)
            fired = self.fired
        if fired:
            _cut(connection)

    def fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            connections = list(self._connections)
        for connection in connections:
            _cut(connection)

    def finish(self) -> None:
        with self._lock:
            self._done = True

    @property
    def done(self) -> bool:
        with self._lock:
            return self._done


def _cut(connection: HTTPConnection) -> None:
    """Wake whatever is blocked on the connection's socket; its own thread then fails and closes it.

    ``shutdown``, not ``close``: closing the descriptor under a blocked call could let it be reused. The plain
    socket method is called even on a TLS socket, so that no TLS state is touched from this thread.
    """
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


_current = threading.local()


def _enlist(connection: HTTPConnection) -> None:
    watch: _Watch | None = getattr(_current, "watch", None)
    if watch is not None:
        watch.enlist(connection)


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
    _current.watch = watch
    _WATCHDOG.add(time.monotonic() + seconds, watch)
    try:
        yield watch
    finally:
        watch.finish()
        _WATCHDOG.finished()
        _current.watch = None


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        _enlist(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _enlist(self)  # a kept-alive connection, connected during an earlier request
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        _enlist(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _enlist(self)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter with connections the watchdog can cut, direct or through an HTTP(S) proxy."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:  # not a SOCKS manager, whose pools make their own connections
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def session() -> requests.Session:
    """A session whose requests ``bounded_request`` can end at a deadline."""
    made = requests.Session()
    for prefix in ("http://", "https://"):
        made.mount(prefix, _WatchedAdapter())
    return made


def bounded_request(
    made: requests.Session,
    method: str,
    url: str,
    deadline: float,
    *,
    connect_seconds: float | None = None,
    **kwargs: Any,
) -> requests.Response:
    """One whole request (connection, body sent, headers and body read) ended by ``deadline`` (monotonic);
    connecting (with any TLS handshake) takes at most ``connect_seconds`` when given.

    Raises ``DeadlineError`` when the deadline passes first, and what requests raises otherwise (a
    ``requests.Timeout`` only when connecting took longer than ``connect_seconds``).
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineError
    connect = remaining if connect_seconds is None else min(remaining, connect_seconds)
    with _watching(remaining) as watch:
        try:
            # The socket timeouts cut a silent server at the deadline; the watchdog, one that keeps trickling.
            response = made.request(method, url, timeout=(connect, remaining), **kwargs)
        except requests.Timeout:
            if watch.fired or time.monotonic() >= deadline - 0.01 or connect >= remaining:
                raise DeadlineError from None
            raise
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            if watch.fired:
                raise DeadlineError from exc
            raise
    if watch.fired:
        # Headers or a body cut short can look complete (an answer read to its end of stream): never use it.
        response.close()
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
    return isinstance(exc, requests.exceptions.SSLError) and any(answer in text for answer in _PLAIN_HTTP_ANSWERS)


def is_certificate_error(exc: BaseException) -> bool:
    return isinstance(exc, requests.exceptions.SSLError) and "certificate" in str(exc).lower()


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
