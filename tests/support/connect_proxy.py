"""A forward HTTP proxy on 127.0.0.1, as a runner's HTTPS_PROXY or HTTP_PROXY names one.

``CONNECT host:port`` opens a tunnel (for HTTPS); a request in absolute form (``GET http://host:port/path``)
is forwarded in origin form, one request per connection. With ``credentials`` it answers 407 to a request
without that ``Proxy-Authorization``; with ``tls`` it is an https:// proxy (TLS to the proxy, and for HTTPS
the server's TLS inside it). Only loopback targets are relayed. Standard library only, a thread
per connection, relaying both ways; every request it saw is logged.
"""

from __future__ import annotations

import base64
import contextlib
import select
import socket
import ssl
import threading
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    """Header fields by lower-case name."""


class ConnectProxy:
    def __init__(self, credentials: tuple[str, str] | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.credentials = credentials
        self.tls = tls
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._thread = threading.Thread(target=self._accept, name="connect-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> ConnectProxy:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stopping.set()
        self._listener.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, accepted: socket.socket) -> None:
        with accepted, contextlib.suppress(OSError):
            accepted.settimeout(10)
            client = accepted if self.tls is None else self.tls.wrap_socket(accepted, server_side=True)
            with client:
                self._relay(client)

    def _relay(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            reader = client.makefile("rb")
            start = reader.readline(65536).decode("latin-1").strip()
            headers: dict[str, str] = {}
            for _ in range(200):  # bounded: a head has at most this many fields
                line = reader.readline(65536).decode("latin-1")
                if line in ("\r\n", "\n", ""):
                    break
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            method, target, _ = start.split(" ", 2)
            with self._lock:
                self.seen.append(Seen(method, target, headers))
            if not self._authorized(headers):
                client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                return
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                self._tunnel(client, host.strip("[]"), int(port))
            else:
                body = reader.read(int(headers.get("content-length") or 0))
                self._forward(client, method, target, headers, body)

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.credentials is None:
            return True
        expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        return headers.get("proxy-authorization") == expected

    def _tunnel(self, client: socket.socket, host: str, port: int) -> None:
        if host not in _LOOPBACK:
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        with socket.create_connection((host, port), timeout=10) as upstream:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            _relay_both(client, upstream)

    def _forward(self, client: socket.socket, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        parts = urlsplit(target)
        if parts.hostname not in _LOOPBACK or parts.port is None:
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        fields = {name: value for name, value in headers.items() if not name.startswith("proxy-")}
        fields["connection"] = "close"
        path = parts._replace(scheme="", netloc="").geturl() or "/"
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as upstream:
            upstream.sendall(head.encode("latin-1") + b"\r\n" + body)
            _pipe(upstream, client)


def _relay_both(client: socket.socket, upstream: socket.socket) -> None:
    """Copy each way until either side closes or both are idle for the sockets' timeout. One thread does it:
    a TLS socket must not be read in one thread while another writes it (OpenSSL's objects are not shared)."""
    other = {client: upstream, upstream: client}
    timeout = client.gettimeout()
    while True:  # bounded: each pass moves bytes, or it ends on a close or on an idle timeout
        buffered = isinstance(client, ssl.SSLSocket) and client.pending() > 0
        readable = [client] if buffered else select.select([client, upstream], [], [], timeout)[0]
        if not readable:
            return
        for source in readable:
            data = source.recv(65536)
            if not data:
                return
            other[source].sendall(data)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy until ``source`` closes, then close ``sink``'s sending side; bounded by the sockets' timeouts."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
