"""A fault-injecting HTTP/1.1 reverse proxy to put in front of a real registry in end-to-end tests.

Requests are relayed byte for byte (request line, headers including Host, and bodies in their own framing),
so the registry's absolute Location URLs keep pointing at the proxy and the Docker engine cannot tell it
apart from the registry. Bodies are streamed in small pieces in both directions: a blob upload of hundreds
of megabytes never sits in memory.

Rules inject faults: the first rule that matches a request and has firings left decides what happens to it
instead of the registry (or, for ``Delay`` and ``Drip``, how late or how slowly the registry's answer comes).
``set_down(True)`` makes the proxy look like a stopped server: new connections are refused (the listening
socket stops listening but keeps its port) and open ones are reset.

Standard library only, one thread per client connection, one fresh upstream connection per forwarded request.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Literal

PIECE = 64 * 1024
"""How much of a body is read and written at a time."""

MAX_LINE = 64 * 1024
"""Longest request line, status line, header line or chunk-size line accepted."""

MAX_HEADERS = 200

BACKLOG = 128

TLS_HANDSHAKE = b"\x16"
"""The first byte of a TLS ClientHello record."""

BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n400 Bad Request"

BODY_GRACE_SECONDS = 0.5
"""How long to wait, once the response is relayed, for the rest of a request body the registry did not read."""


class ProtocolError(Exception):
    """The peer sent something that is not HTTP/1.1 this proxy can relay."""


@dataclass(frozen=True)
class Status:
    """Answer with this status (after reading the request body) and close the connection."""

    code: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Drop:
    """Reset the client connection (RST) once the request head is read, without any response."""


@dataclass(frozen=True)
class Hang:
    """Read the request, then send nothing for ``seconds`` (or until the proxy stops), then close."""

    seconds: float


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` (or until the proxy stops), then forward the request normally."""

    seconds: float


@dataclass(frozen=True)
class Down:
    """Behave like a dead registry for this request: reset the connection at once, reading nothing more."""


@dataclass(frozen=True)
class Drip:
    """Forward the request, then relay the registry's answer one byte every ``interval`` seconds (until the proxy
    stops): its head, status line and header fields (``part="head"``), or, the head sent at once, its body
    (``part="body"``). Every byte arrives well within any socket timeout; only a deadline cuts it."""

    interval: float
    part: Literal["head", "body"] = "body"


Fault = Status | Drop | Hang | Delay | Down | Drip


def fault_name(fault: Fault) -> str:
    """The outcome recorded in the request log when ``fault`` fires: ``status:503``, ``drop``, ``hang``…"""
    if isinstance(fault, Status):
        return f"status:{fault.code}"
    return type(fault).__name__.lower()


@dataclass
class Rule:
    """A fault for the requests that match ``method`` (exact) and ``path`` (a regex searched in the target)."""

    fault: Fault
    method: str | None = None
    path: re.Pattern[str] | None = None
    times: int | None = 1
    """Firings left; None fires forever."""
    hits: int = 0

    def matches(self, method: str, target: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path is None or self.path.search(target) is not None


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    outcome: int | str
    """The registry's status code when forwarded (also after a Delay); else the fault's name (see
    ``fault_name``), ``upstream-error`` when the registry could not be reached or broke off, or ``client-error``
    when the client broke off its upload before an answer came."""
    headers: tuple[tuple[str, str], ...] = ()
    """The request's header fields as received."""

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


@dataclass
class _Head:
    """A parsed request or response head, with its raw bytes kept for relaying unchanged."""

    start: str
    headers: list[tuple[str, str]]
    raw: bytes

    def values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    def tokens(self, name: str) -> list[str]:
        return [token.strip().lower() for value in self.values(name) for token in value.split(",") if token.strip()]

    def version(self) -> str:
        word = self.start.split(" ", 1)[0] if self.start.startswith("HTTP/") else self.start.rsplit(" ", 1)[-1]
        return word.upper()

    def wants_close(self) -> bool:
        connection = self.tokens("connection")
        if self.version() == "HTTP/1.0":
            return "keep-alive" not in connection
        return "close" in connection

    def is_chunked(self) -> bool:
        codings = self.tokens("transfer-encoding")
        return bool(codings) and codings[-1] == "chunked"

    def content_length(self) -> int | None:
        values = {value.strip() for value in self.values("content-length")}
        if not values:
            return None
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise ProtocolError(f"bad Content-Length: {sorted(values)}")
        return int(next(iter(values)))


def _read_line(reader: io.BufferedReader) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise ProtocolError("line too long")
    return line


def _read_head(reader: io.BufferedReader) -> _Head | None:
    """The next message head, or None when the peer closed the connection cleanly before sending one."""
    line = _read_line(reader)
    while line in (b"\r\n", b"\n"):  # RFC 9112: ignore empty lines before a request line
        line = _read_line(reader)
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise ProtocolError("connection closed inside a message head")
    raw = [line]
    headers: list[tuple[str, str]] = []
    while True:
        line = _read_line(reader)
        if not line.endswith(b"\n"):
            raise ProtocolError("connection closed inside a message head")
        raw.append(line)
        if line in (b"\r\n", b"\n"):
            break
        if len(headers) >= MAX_HEADERS:
            raise ProtocolError("too many header fields")
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon:
            raise ProtocolError(f"malformed header line {line!r}")
        headers.append((name.strip(), value.strip()))
    return _Head(raw[0].decode("latin-1").rstrip("\r\n"), headers, b"".join(raw))


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    head: _Head


def _read_request(reader: io.BufferedReader) -> _Request | None:
    head = _read_head(reader)
    if head is None:
        return None
    parts = head.start.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x request line: {head.start!r}")
    return _Request(parts[0], parts[1], head)


def _copy_exactly(reader: io.BufferedReader, write: Callable[[bytes], None], length: int) -> None:
    while length > 0:
        piece = reader.read(min(PIECE, length))
        if not piece:
            raise ProtocolError(f"connection closed with {length} body bytes missing")
        write(piece)
        length -= len(piece)


def _copy_chunked(reader: io.BufferedReader, write: Callable[[bytes], None]) -> None:
    """Relay a chunked body in its own framing, chunk-size lines, extensions and trailers included."""
    while True:
        line = _read_line(reader)
        if not line.endswith(b"\n"):
            raise ProtocolError("connection closed inside a chunked body")
        write(line)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {line!r}") from None
        if size == 0:
            break
        _copy_exactly(reader, write, size + 2)  # the chunk and its CRLF
    while True:  # trailer fields, up to the empty line
        line = _read_line(reader)
        if not line.endswith(b"\n"):
            raise ProtocolError("connection closed inside chunked trailers")
        write(line)
        if line in (b"\r\n", b"\n"):
            return


def _copy_until_close(reader: io.BufferedReader, write: Callable[[bytes], None]) -> None:
    while piece := reader.read1(PIECE):
        write(piece)


def _copy_request_body(head: _Head, reader: io.BufferedReader, write: Callable[[bytes], None]) -> None:
    if head.is_chunked():
        _copy_chunked(reader, write)
        return
    length = head.content_length()
    if length:
        _copy_exactly(reader, write, length)


def _discard(_: bytes) -> None:
    pass


def _response_has_body(method: str, status: int) -> bool:
    return method != "HEAD" and status >= 200 and status not in (204, 304)


def _linger_zero(sock: socket.socket) -> None:
    """Make the coming close send a reset (RST) instead of an orderly end of stream (FIN)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _abort(sock: socket.socket) -> None:
    """Reset a connection another thread owns: wake it (SHUT_RD sends nothing) and let its close send the RST.

    Closing the descriptor from here instead could pull it from under a blocked call and let it be reused.
    """
    _linger_zero(sock)
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RD)  # the plain method: no TLS state touched from here


def _shutdown(sock: socket.socket) -> None:
    """Wake a thread blocked on ``sock`` without closing the descriptor under it."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _DroppedError(Exception):
    """The connection was reset on purpose; the handler must not touch it again."""


class FaultProxy:
    """A reverse proxy on 127.0.0.1 in front of ``upstream`` ("127.0.0.1:PORT") that injects faults."""

    def __init__(self, upstream: str, *, upstream_timeout: float = 120.0, tls: ssl.SSLContext | None = None) -> None:
        host, _, port = upstream.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"upstream must be HOST:PORT, not {upstream!r}")
        self.upstream = (host, int(port))
        self.upstream_timeout = upstream_timeout
        self.tls = tls
        """A server context to speak HTTPS to clients with (the registry behind is still asked in plain HTTP)."""
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._log: list[LoggedRequest] = []
        self._open: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._up = threading.Condition(self._lock)
        self._down = False
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._port: int | None = None
        self._accepted = 0

    # -- lifecycle -----------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy has not been started")
        return self._port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        if self._listener is not None:
            raise RuntimeError("the proxy is already running")
        self._stopping.clear()
        self._down = False
        # Bound to an explicit port (not 0) so that Linux keeps the port when set_down stops listening.
        self._port = self._port or _free_port()
        self._listener = self._listen(self._port)
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"faultproxy-{self._port}", daemon=True)
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            listener, self._listener = self._listener, None
            self._up.notify_all()
            open_sockets = list(self._open)
        if listener is not None:
            _shutdown(listener)
        for sock in open_sockets:
            _shutdown(sock)
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
            self._acceptor = None
        if listener is not None:
            listener.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def set_down(self, down: bool) -> None:
        """Look like a stopped registry (connections refused, open ones reset) or come back on the same port."""
        with self._lock:
            if down == self._down:
                return
            listener = self._listener
            if down:
                self._down = True
                open_sockets = list(self._open)
        if down:
            if listener is not None:
                # On Linux, shutting down a listening socket stops it listening (connects are refused) while
                # the port stays bound to it, and listen() resumes it.
                _shutdown(listener)
            for sock in open_sockets:
                _abort(sock)
            return
        if listener is not None:
            try:
                listener.listen(BACKLOG)
            except OSError:  # a system that closed it for good: bind the same port again
                replacement = self._listen(self.port)
                with self._lock:
                    self._listener = replacement
                listener.close()
        with self._lock:
            self._down = False
            self._up.notify_all()

    @staticmethod
    def _listen(port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(BACKLOG)
        return listener

    # -- rules and the log ---------------------------------------------------------------------------------

    def add_rule(self, fault: Fault, method: str | None = None, path: str | None = None, times: int | None = 1) -> Rule:
        rule = Rule(fault, method.upper() if method else None, re.compile(path) if path else None, times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def requests(self) -> list[LoggedRequest]:
        """A snapshot of every request read so far, in arrival order of their outcomes."""
        with self._lock:
            return list(self._log)

    def count(self, method: str | None = None, path: str | None = None, outcome: int | str | None = None) -> int:
        """How many logged requests have this method, a path the regex ``path`` is found in, and ``outcome``."""
        pattern = re.compile(path) if path else None
        return sum(
            1
            for entry in self.requests
            if (method is None or entry.method == method.upper())
            and (pattern is None or pattern.search(entry.path))
            and (outcome is None or entry.outcome == outcome)
        )

    @property
    def connections(self) -> int:
        """How many client connections were accepted (to check that keep-alive connections are reused)."""
        with self._lock:
            return self._accepted

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _fire(self, method: str, target: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, target) and (rule.times is None or rule.times > 0):
                    if rule.times is not None:
                        rule.times -= 1
                    rule.hits += 1
                    return rule.fault
        return None

    def _record(self, request: _Request, outcome: int | str) -> None:
        entry = LoggedRequest(request.method, request.target, outcome, tuple(request.head.headers))
        with self._lock:
            self._log.append(entry)

    # -- connections ---------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                while self._down and not self._stopping.is_set():
                    self._up.wait()
                listener = self._listener
            if listener is None or self._stopping.is_set():
                return
            try:
                client, _ = listener.accept()
            except OSError:
                if not self._stopping.is_set() and not self._down:
                    time.sleep(0.01)  # a passing failure (out of descriptors, say): try again
                continue
            with self._lock:
                if self._down:  # accepted in the instant set_down(True) ran
                    _linger_zero(client)
                    client.close()
                    continue
                self._accepted += 1
                thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
                self._threads.add(thread)
                self._open.add(client)
            thread.start()

    @contextlib.contextmanager
    def _tracked(self, sock: socket.socket) -> Iterator[socket.socket]:
        with self._lock:
            self._open.add(sock)
        try:
            yield sock
        finally:
            with self._lock:
                self._open.discard(sock)
            sock.close()

    def _serve(self, client: socket.socket) -> None:
        try:
            if self.tls is not None:
                client = self._secure(client)
            with self._tracked(client), client.makefile("rb") as reader:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                keep_alive = True
                while keep_alive and not self._stopping.is_set():
                    if reader.peek(1)[:1] == TLS_HANDSHAKE:
                        # The engine tries https first even for a loopback registry, and falls back to plain
                        # http only when the answer is plain HTTP (as the registry's is), not a closed socket.
                        client.sendall(BAD_REQUEST)
                        return
                    try:
                        request = _read_request(reader)
                    except ProtocolError:
                        client.sendall(BAD_REQUEST)
                        return
                    if request is None:
                        return
                    keep_alive = self._handle(client, reader, request)
        except (OSError, ProtocolError, _DroppedError):
            pass  # the client went away, sent garbage, or is reset on purpose (by the close above)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _secure(self, client: socket.socket) -> socket.socket:
        """The client's connection after a TLS handshake; a client that speaks no TLS is reset."""
        assert self.tls is not None
        with self._lock:
            self._open.discard(client)  # wrapping detaches it; the TLS socket is tracked instead
        client.settimeout(10)
        try:
            secured = self.tls.wrap_socket(client, server_side=True)
        except OSError:
            _linger_zero(client)
            client.close()
            raise
        secured.settimeout(None)
        return secured

    def _handle(self, client: socket.socket, reader: io.BufferedReader, request: _Request) -> bool:
        """Answer one request; True when the connection can carry another."""
        if self._down:
            _linger_zero(client)
            raise _DroppedError
        fault = self._fire(request.method, request.target)
        if fault is None or isinstance(fault, Delay | Drip):
            if isinstance(fault, Delay):
                self._stopping.wait(fault.seconds)
            return self._forward(client, reader, request, fault if isinstance(fault, Drip) else None)
        self._record(request, fault_name(fault))
        if isinstance(fault, Drop | Down):
            _linger_zero(client)
            raise _DroppedError
        if "100-continue" not in request.head.tokens("expect"):  # else the client waits, sending no body
            _copy_request_body(request.head, reader, _discard)
        if isinstance(fault, Hang):
            self._stopping.wait(fault.seconds)
            return False
        client.sendall(_status_response(fault, request.method))
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)
        return False

    def _forward(
        self, client: socket.socket, reader: io.BufferedReader, request: _Request, drip: Drip | None = None
    ) -> bool:
        try:
            upstream = socket.create_connection(self.upstream, timeout=self.upstream_timeout)
        except OSError:
            self._record(request, "upstream-error")
            client.sendall(_status_response(Status(502, body=b"upstream unreachable\n"), request.method))
            return False
        with self._tracked(upstream), upstream.makefile("rb") as upstream_reader:
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream.sendall(request.head.raw)
            # The body is pumped on its own thread so that a registry answering before it has read the whole
            # body (an early 401, say) is relayed at once instead of both sides waiting on each other.
            body_error: list[BaseException] = []

            def pump() -> None:
                try:
                    _copy_request_body(request.head, reader, upstream.sendall)
                except (OSError, ProtocolError) as exc:
                    body_error.append(exc)
                    _shutdown(upstream)

            pumper = threading.Thread(target=pump, name="faultproxy-body", daemon=True)
            pumper.start()
            try:
                reusable = self._relay_response(client, request, upstream_reader, body_error, drip)
                pumper.join(BODY_GRACE_SECONDS)
                # A registry that answered without reading the whole body never will: the rest of it would be
                # taken for the next request, so this connection cannot carry another.
                return reusable and not pumper.is_alive() and not body_error and not request.head.wants_close()
            finally:
                if pumper.is_alive():
                    with contextlib.suppress(OSError):
                        client.shutdown(socket.SHUT_RD)
                    _shutdown(upstream)
                    pumper.join(5)

    def _relay_response(
        self,
        client: socket.socket,
        request: _Request,
        upstream_reader: io.BufferedReader,
        body_error: list[BaseException],
        drip: Drip | None = None,
    ) -> bool:
        """Relay the registry's response; True when it leaves the connection open for another request."""
        send_head: Callable[[bytes], None] = client.sendall
        send_body: Callable[[bytes], None] = client.sendall
        if drip is not None and drip.part == "head":
            send_head = self._dripping(client, drip.interval)
        elif drip is not None:
            send_body = self._dripping(client, drip.interval)
        try:
            response = _read_head(upstream_reader)
            while response is not None and _status_of(response) < 200:  # 100 Continue and friends
                client.sendall(response.raw)
                response = _read_head(upstream_reader)
        except (OSError, ProtocolError):
            response = None
        if response is None:
            if body_error or self._down:  # the client broke off its upload, or the proxy went down
                self._record(request, "client-error" if body_error else "down")
                raise _DroppedError
            self._record(request, "upstream-error")
            client.sendall(_status_response(Status(502, body=b"upstream closed the connection\n"), request.method))
            return False
        status = _status_of(response)
        self._record(request, status)
        send_head(response.raw)
        if not _response_has_body(request.method, status):
            return not response.wants_close()
        if response.is_chunked():
            _copy_chunked(upstream_reader, send_body)
        elif (length := response.content_length()) is not None:
            _copy_exactly(upstream_reader, send_body, length)
        else:
            _copy_until_close(upstream_reader, send_body)
            return False
        return not response.wants_close()

    def _dripping(self, client: socket.socket, interval: float) -> Callable[[bytes], None]:
        def send(data: bytes) -> None:
            for index in range(len(data)):
                if self._stopping.wait(interval):
                    raise _DroppedError
                client.sendall(data[index : index + 1])

        return send


def _status_of(response: _Head) -> int:
    parts = response.start.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {response.start!r}")
    return int(parts[1])


def _status_response(fault: Status, method: str) -> bytes:
    try:
        reason = HTTPStatus(fault.code).phrase
    except ValueError:
        reason = "Injected Fault"
    headers = {"Content-Type": "text/plain; charset=utf-8", **fault.headers}
    headers["Content-Length"] = str(len(fault.body))
    headers["Connection"] = "close"
    lines = [f"HTTP/1.1 {fault.code} {reason}"] + [f"{name}: {value}" for name, value in headers.items()]
    body = b"" if method == "HEAD" else fault.body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
