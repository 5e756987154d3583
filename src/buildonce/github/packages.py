"""The GitHub Packages REST API for container packages: list a package's versions, delete one.

ghcr.io does not honour the OCI distribution API's DELETE; its package versions (one per manifest digest,
tagged or not) are deleted through ``api.github.com`` instead. Each method makes one attempt and turns a
failure into a ``RegistryError`` that says whether it is worth trying again, as the registry client does, so
the same retry policy serves both: 5xx, 429 and GitHub's rate limits (a 403 or 429 with ``Retry-After``, or
with ``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset``) are transient.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests

from buildonce.errors import RegistryError
from buildonce.references import ImageName
from buildonce.registry.http import parse_retry_after

DEFAULT_API = "https://api.github.com"
MAX_PAGES = 1000
"""At 100 versions a page, 100,000 versions: a bound, so that a Link that loops cannot run forever."""


@dataclass(frozen=True)
class PackageVersion:
    id: int
    digest: str
    tags: tuple[str, ...]
    created_at: str


@dataclass(frozen=True)
class Package:
    """A container package: its owner (an organization or a user) and its name, as the API spells them."""

    owner: str
    name: str

    @classmethod
    def of(cls, image: ImageName) -> Package:
        owner, _, name = image.repository.partition("/")
        if not name:
            raise RegistryError(
                f"{image}: a GitHub container package is named ghcr.io/<owner>/<name>; this image names no owner."
            )
        return cls(owner, name)

    def path(self, kind: str) -> str:
        return f"/{kind}/{quote(self.owner, safe='')}/packages/container/{quote(self.name, safe='')}/versions"


def _versions(data: Any) -> list[PackageVersion]:
    found = []
    for entry in data if isinstance(data, list) else []:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("id"), int)
            or not isinstance(entry.get("name"), str)
        ):
            continue
        metadata = entry.get("metadata")
        container = metadata.get("container") if isinstance(metadata, dict) else None
        tags = container.get("tags") if isinstance(container, dict) else None
        found.append(
            PackageVersion(
                id=entry["id"],
                digest=entry["name"],
                tags=tuple(tag for tag in tags or [] if isinstance(tag, str)),
                created_at=str(entry.get("created_at") or ""),
            )
        )
    return found


class PackagesAPI:
    """One HTTP session to the GitHub REST API with one token, which never appears in a message."""

    def __init__(
        self,
        token: str,
        *,
        api_url: str = DEFAULT_API,
        timeout: float = 60.0,
        pace_seconds: float = 1.0,
        page_size: int = 100,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._token = token
        self._api = api_url.rstrip("/")
        self._timeout = timeout
        self._pace = pace_seconds
        self._page_size = page_size
        self._sleep = sleep
        self._clock = clock
        self._last_write = 0.0
        self._kinds: dict[str, str] = {}
        self._session = requests.Session()
        self._session.headers.update(
            {
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "buildonce",
            }
        )

    def close(self) -> None:
        self._session.close()

    def versions(self, package: Package) -> list[PackageVersion]:
        """Every version of the package, page by page (an organization's package, else a user's)."""
        what = f"list the versions of the package {package.owner}/{package.name}"
        kinds = [self._kinds[package.owner]] if package.owner in self._kinds else ["orgs", "users"]
        for kind in kinds:
            url: str | None = f"{self._api}{package.path(kind)}?per_page={self._page_size}"
            found: list[PackageVersion] = []
            for _ in range(MAX_PAGES):
                if url is None:
                    self._kinds[package.owner] = kind
                    return found
                response = self._request("GET", url, what)
                if response.status_code == 404 and not found:
                    break
                if response.status_code != 200:
                    raise self._error(response, what)
                found += _versions(response.json())
                following = response.links.get("next", {}).get("url")
                url = urljoin(url, following) if following else None
                if url and urlsplit(url).netloc != urlsplit(self._api).netloc:
                    raise RegistryError(f"{what}: the API sent the next page to another host.")
            else:
                raise RegistryError(f"{what}: more than {MAX_PAGES} pages of versions.")
        raise RegistryError(
            f"{what}: GitHub knows no container package {package.name!r} of {package.owner!r} (HTTP 404), or the "
            "token cannot see it. Check the image name, and give the token read:packages (GITHUB_TOKEN: "
            "permissions: packages: read, and the repository access to the package)."
        )

    def delete_version(self, package: Package, version: int) -> bool:
        """Delete one version; False when it was already gone (404), which counts as done."""
        what = f"delete version {version} of the package {package.owner}/{package.name}"
        if package.owner not in self._kinds:
            self.versions(package)
        url = f"{self._api}{package.path(self._kinds[package.owner])}/{version}"
        # GitHub asks for a second between writes, or it answers with its secondary rate limit.
        wait = self._last_write + self._pace - time.monotonic()
        if wait > 0:
            self._sleep(wait)
        response = self._request("DELETE", url, what)
        self._last_write = time.monotonic()
        if response.status_code in (200, 202, 204):
            return True
        if response.status_code == 404:
            return False
        raise self._error(response, what)

    def _request(self, method: str, url: str, what: str) -> requests.Response:
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            return self._session.request(method, url, headers=headers, timeout=self._timeout)
        except requests.RequestException as exc:
            raise RegistryError(
                f"{what}: cannot talk to the GitHub API ({type(exc).__name__}).", transient=True
            ) from None

    def _error(self, response: requests.Response, what: str) -> RegistryError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = {}
        message = body.get("message", "") if isinstance(body, dict) else ""
        said = f" GitHub said: {message.replace(self._token, '***')}" if message else ""
        limited = self._rate_limit_wait(response)
        if status == 429 or status >= 500 or (status == 403 and limited is not None):
            return RegistryError(f"{what}: HTTP {status}.{said}", transient=True, retry_after=limited)
        if status == 401:
            return RegistryError(f"{what}: the token was refused (HTTP 401).{said} Check the password input.")
        if status == 403:
            return RegistryError(
                f"{what}: the token may not delete this package (HTTP 403).{said} For GITHUB_TOKEN give the job "
                "permissions: packages: write and this repository the Admin role on the package; otherwise use a "
                "token with delete:packages."
            )
        return RegistryError(f"{what}: HTTP {status}.{said}")

    def _rate_limit_wait(self, response: requests.Response) -> float | None:
        """Seconds GitHub asks to wait when it answers with a rate limit; None when it is no rate limit."""
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if retry_after is not None:
            return retry_after
        if response.headers.get("x-ratelimit-remaining") == "0":
            reset = response.headers.get("x-ratelimit-reset", "")
            if reset.isdigit():
                return max(float(reset) - self._clock(), 0.0)
            return 60.0
        text = response.text.lower()
        if "secondary rate limit" in text:
            return 60.0  # GitHub's advice: wait at least a minute
        return None
