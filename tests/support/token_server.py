"""A bearer token service for a real Distribution registry, as GHCR, Docker Hub and most hosted registries use.

The registry answers ``401`` with ``WWW-Authenticate: Bearer realm=…,service=…,scope=…``; the client asks this
service for a token (HTTP basic auth, ``GET /token?service=…&scope=repository:NAME:pull,push``) and presents
the JSON Web Token it gets. Tokens are RS256-signed with a throwaway key whose self-signed certificate the
registry trusts (``rootcertbundle``); the certificate travels in the token's ``x5c`` header.

Known users get every action they ask for; anonymous requests get a token with no access, as hosted
registries answer for private repositories, and wrong passwords a 401. Every request is recorded, so tests
can see the scopes.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

SERVICE = "buildonce-test-registry"
ISSUER = "buildonce-test-token-issuer"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class TokenRequest:
    user: str
    """The user that authenticated, or "" (anonymous, or a wrong password)."""
    scopes: tuple[str, ...]


class TokenServer:
    def __init__(self, root: Path, users: dict[str, str]) -> None:
        self.users = users
        self.requests: list[TokenRequest] = []
        root.mkdir(parents=True, exist_ok=True)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.now(timezone.utc)
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.certificate_path = root / "token-cert.pem"
        self.certificate_path.write_bytes(self._certificate.public_bytes(serialization.Encoding.PEM))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def realm(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/token"

    def registry_auth_config(self) -> str:
        """The ``auth:`` section of a Distribution config that sends clients here."""
        return (
            "auth:\n  token:\n"
            f"    realm: {self.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
            f"    rootcertbundle: {self.certificate_path}\n"
        )

    def scopes_asked(self) -> list[str]:
        return [scope for request in self.requests for scope in request.scopes]

    def token(self, user: str, scopes: list[str]) -> str:
        access = []
        if user:
            for scope in scopes:
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        certificate = base64.b64encode(self._certificate.public_bytes(serialization.Encoding.DER)).decode()
        header = {"typ": "JWT", "alg": "RS256", "x5c": [certificate]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/token":
                    self.send_error(404)
                    return
                query = parse_qs(url.query)
                scopes = [scope for value in query.get("scope", []) for scope in value.split(" ") if scope]
                user = self._user()
                server.requests.append(TokenRequest(user or "", tuple(scopes)))
                if user is None:
                    self._refuse()
                    return
                self._send_token(user, scopes)

            def do_POST(self) -> None:
                """OAuth2's password grant, which containerd (and so dockerd's containerd store) tries first."""
                if urlsplit(self.path).path != "/token":
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                scopes = [scope for value in form.get("scope", []) for scope in value.split(" ") if scope]
                if form.get("grant_type") != ["password"]:
                    self.send_error(400, "unsupported grant_type")
                    return
                user = form.get("username", [""])[0]
                known = server.users.get(user) == form.get("password", [""])[0]
                server.requests.append(TokenRequest(user if known else "", tuple(scopes)))
                if not known:
                    self._refuse()
                    return
                self._send_token(user, scopes)

            def _refuse(self) -> None:
                self._send_json(401, {"details": "incorrect username or password"})

            def _send_token(self, user: str, scopes: list[str]) -> None:
                token = server.token(user, scopes)
                self._send_json(200, {"token": token, "access_token": token, "expires_in": 300})

            def _send_json(self, status: int, document: dict[str, object]) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _user(self) -> str | None:
                """The user, "" for an anonymous request, None for wrong credentials."""
                header = self.headers.get("Authorization", "")
                if not header.startswith("Basic "):
                    return ""
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                return user if server.users.get(user) == password else None

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def start(self) -> TokenServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
