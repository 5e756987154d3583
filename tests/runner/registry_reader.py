"""What a loopback registry serves, read as a user would check it, with the login the registry asks for.

Independent of buildonce's own registry client, like tests/support/registry_api.py, but able to log in:
the example workflows push to registries that want htpasswd (Basic) or token (Bearer) logins.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from registry_api import ACCEPT

_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


def _send(url: str, method: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310 - loopback only
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback only
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@dataclass(frozen=True)
class RegistryReader:
    address: str
    user: str
    password: str

    def _basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

    def _request(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        url = f"http://{self.address}/v2/{path}"
        status, headers, body = _send(url, method, {"Accept": ACCEPT})
        challenge = headers.get("Www-Authenticate") or headers.get("WWW-Authenticate") or ""
        if status != 401 or not challenge:
            return status, headers, body
        if challenge.lower().startswith("basic"):
            return _send(url, method, {"Accept": ACCEPT, "Authorization": self._basic()})
        fields = dict(_CHALLENGE.findall(challenge))
        query = urllib.parse.urlencode({key: fields[key] for key in ("service", "scope") if key in fields})
        status, _, answer = _send(f"{fields['realm']}?{query}", "GET", {"Authorization": self._basic()})
        assert status == 200, f"token service answered {status}"
        token = json.loads(answer).get("token") or json.loads(answer)["access_token"]
        return _send(url, method, {"Accept": ACCEPT, "Authorization": f"Bearer {token}"})

    def tags(self, repository: str) -> list[str]:
        """The repository's tags, sorted; none when nothing was ever pushed to it."""
        status, _, body = self._request(f"{repository}/tags/list")
        if status == 404:
            return []
        assert status == 200, f"tags of {repository} -> {status}"
        return sorted(json.loads(body).get("tags") or [])

    def digest_of(self, repository: str, reference: str) -> str | None:
        status, headers, _ = self._request(f"{repository}/manifests/{reference}", "HEAD")
        if status == 404:
            return None
        assert status == 200, f"HEAD {repository}:{reference} -> {status}"
        return headers.get("Docker-Content-Digest")

    def manifest(self, repository: str, reference: str) -> dict[str, Any]:
        status, _, body = self._request(f"{repository}/manifests/{reference}")
        assert status == 200, f"GET {repository}:{reference} -> {status}"
        data: dict[str, Any] = json.loads(body)
        return data

    def platforms(self, repository: str, reference: str) -> list[str]:
        index = self.manifest(repository, reference)
        return sorted(
            f"{entry['platform']['os']}/{entry['platform']['architecture']}"
            for entry in index.get("manifests", [])
            if entry.get("platform", {}).get("os") not in (None, "unknown")
        )

    def labels(self, repository: str, reference: str) -> list[dict[str, str]]:
        """The labels of each platform's image config."""
        manifest = self.manifest(repository, reference)
        children = [entry["digest"] for entry in manifest.get("manifests", [])] or [reference]
        found = []
        for child in children:
            image = self.manifest(repository, child)
            if "config" not in image or image["config"].get("mediaType", "").endswith("in-toto+json"):
                continue
            status, _, body = self._request(f"{repository}/blobs/{image['config']['digest']}")
            assert status == 200, f"config of {repository}@{child} -> {status}"
            config = json.loads(body)
            if config.get("os") == "unknown":
                continue
            found.append(dict(config.get("config", {}).get("Labels") or {}))
        return found
