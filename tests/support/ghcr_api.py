"""A loopback fake of the GitHub Packages REST API for container packages, backed by a real Distribution registry.

GHCR keeps one package version per manifest digest, tagged or not, and deletes through api.github.com, not
through the OCI DELETE. This fake does the same over a test registry: every listing first brings the versions
up to date with the registry (a new digest under a tag, or an index's child, becomes a new version, newest id
first), and deleting a version deletes that manifest from the registry.

Modelled on GitHub's documented responses (REST API version 2022-11-28):

- "List package versions for a package owned by an organization / a user"
  (``GET /orgs/{org}/packages/container/{name}/versions``, ``GET /users/{username}/…``): a JSON array of
  versions ``{"id", "name": "sha256:…", "url", "package_html_url", "created_at", "updated_at", "html_url",
  "metadata": {"package_type": "container", "container": {"tags": […]}}}``, ``page`` and ``per_page`` (at most
  100), and a ``Link`` header with ``rel="next"`` and ``rel="last"`` ("Using pagination in the REST API").
- "Delete package version for an organization / a user": ``204 No Content``; an unknown id is
  ``404 {"message": "Not Found", "documentation_url": …, "status": "404"}``. With ``cascade``, deleting an index
  also deletes its children's versions, so a later delete of a child is that 404.
- "Rate limits for the REST API": a secondary rate limit is ``403`` (or ``429``) with ``Retry-After`` and the
  body ``{"message": "You have exceeded a secondary rate limit…", "documentation_url": …}``; a spent primary
  limit is ``403`` with ``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset`` (epoch seconds).
- Unauthenticated or a wrong token: ``401 {"message": "Bad credentials", …}``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import registry_api

DOCS = "https://docs.github.com/rest/packages/packages"
SECONDARY_LIMIT = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out "
    "to GitHub Support for help, please include the request ID."
)


@dataclass
class Version:
    id: int
    digest: str
    created_at: str


@dataclass
class FakePackages:
    """The fake's state: which owner is an organization, the versions, the faults to answer with."""

    registry: str
    """host:port of the Distribution registry that holds the manifests."""
    token: str
    owner_kind: str = "orgs"
    cascade: bool = True
    versions: dict[str, dict[str, Version]] = field(default_factory=dict)
    """package repository ("owner/name") -> digest -> version."""
    faults: list[tuple[str, int, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    """(method, status, headers, body) answered once each, in order, to the next matching requests."""
    log: list[tuple[str, str, int]] = field(default_factory=list)
    next_id: int = 1000
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sync(self, repository: str) -> None:
        """Make a version of every manifest the registry's tags reach that has none yet."""
        known = self.versions.setdefault(repository, {})
        stack = [
            digest
            for tag in registry_api.tags(self.registry, repository)
            if (digest := registry_api.digest_of(self.registry, repository, tag))
        ]
        seen: set[str] = set()
        while stack:
            digest = stack.pop()
            if digest in seen:
                continue
            seen.add(digest)
            if digest not in known:
                self.next_id += 1
                known[digest] = Version(self.next_id, digest, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            body = registry_api.manifest(self.registry, repository, digest)
            stack += [child["digest"] for child in body.get("manifests", [])]

    def tags_of(self, repository: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for tag in registry_api.tags(self.registry, repository):
            digest = registry_api.digest_of(self.registry, repository, tag)
            if digest:
                found.setdefault(digest, []).append(tag)
        return found


class GhcrApi:
    def __init__(self, packages: FakePackages) -> None:
        self.packages = packages
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def count(self, method: str, status: int | None = None) -> int:
        return sum(1 for m, _, s in self.packages.log if m == method and (status is None or s == status))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self.packages
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._serve("GET")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def _serve(self, method: str) -> None:
                with fake.lock:
                    status, headers, body = self._answer(method)
                    fake.log.append((method, self.path, status))
                raw = b"" if status == 204 else json.dumps(body).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if raw:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _answer(self, method: str) -> tuple[int, dict[str, str], Any]:
                if self.headers.get("Authorization", "") not in (f"Bearer {fake.token}", f"token {fake.token}"):
                    return 401, {}, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}
                for position, (fault_method, status, headers, body) in enumerate(fake.faults):
                    if fault_method == method:
                        del fake.faults[position]
                        return status, headers, body
                url = urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                not_found = {"message": "Not Found", "documentation_url": DOCS, "status": "404"}
                shape = len(parts) in (6, 7) and parts[2:4] == ["packages", "container"] and parts[5] == "versions"
                if not shape or parts[0] != fake.owner_kind:
                    return 404, {}, not_found
                repository = f"{unquote(parts[1])}/{unquote(parts[4])}"
                if method == "GET" and len(parts) == 6:
                    return self._list(repository, url.path, parse_qs(url.query))
                if method == "DELETE" and len(parts) == 7 and parts[6].isdigit():
                    return self._delete(repository, int(parts[6]), not_found)
                return 404, {}, not_found

            def _list(self, repository: str, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, str], Any]:
                fake.sync(repository)
                per_page = min(int(query.get("per_page", ["30"])[0]), 100)
                page = int(query.get("page", ["1"])[0])
                tags = fake.tags_of(repository)
                versions = sorted(fake.versions[repository].values(), key=lambda v: v.id, reverse=True)
                last = max(1, -(-len(versions) // per_page))
                chosen = versions[(page - 1) * per_page : page * per_page]
                owner, name = repository.split("/", 1)
                versions_url = f"{api.url}/{fake.owner_kind}/{owner}/packages/container/{quote(name, safe='')}/versions"
                page_url = f"https://github.com/{fake.owner_kind}/{owner}/packages/container/package/{name}"
                body = [
                    {
                        "id": version.id,
                        "name": version.digest,
                        "url": f"{versions_url}/{version.id}",
                        "package_html_url": page_url,
                        "created_at": version.created_at,
                        "updated_at": version.created_at,
                        "html_url": f"https://github.com/{owner}/packages/container/{name}/{version.id}",
                        "metadata": {"package_type": "container", "container": {"tags": tags.get(version.digest, [])}},
                    }
                    for version in chosen
                ]
                links = []
                if page < last:
                    links.append(f'<{api.url}{path}?per_page={per_page}&page={page + 1}>; rel="next"')
                links.append(f'<{api.url}{path}?per_page={per_page}&page={last}>; rel="last"')
                return 200, {"Link": ", ".join(links)}, body

            def _delete(self, repository: str, version_id: int, not_found: Any) -> tuple[int, dict[str, str], Any]:
                known = fake.versions.get(repository, {})
                version = next((v for v in known.values() if v.id == version_id), None)
                if version is None:
                    return 404, {}, not_found
                doomed = [version.digest]
                if fake.cascade:
                    body = registry_api.manifest(fake.registry, repository, version.digest)
                    doomed += [child["digest"] for child in body.get("manifests", []) if child["digest"] in known]
                for digest in doomed:
                    registry_api._request(f"http://{fake.registry}/v2/{repository}/manifests/{digest}", method="DELETE")
                    known.pop(digest, None)
                return 204, {}, None

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def secondary_limit(self, method: str = "DELETE", retry_after: str = "0", status: int = 403) -> None:
        self.packages.faults.append(
            (
                method,
                status,
                {"Retry-After": retry_after},
                {
                    "message": SECONDARY_LIMIT,
                    "documentation_url": "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
                },
            )
        )

    def primary_limit_spent(self, method: str = "GET", reset_in: float = 0) -> None:
        headers = {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": str(int(time.time() + reset_in)),
        }
        self.packages.faults.append(
            (method, 403, headers, {"message": "API rate limit exceeded for installation.", "documentation_url": DOCS})
        )

    def start(self) -> GhcrApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> GhcrApi:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
