"""A tiny, independent reader of a test registry's HTTP API, to check what buildonce pushed.

Deliberately separate from buildonce's own registry client, so that the tests do not check the code
with itself. Plain HTTP, no auth: for the loopback test registries only.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def _request(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers={"Accept": ACCEPT, **(headers or {})})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback test registry
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def digest_of(address: str, repository: str, reference: str) -> str | None:
    """The Docker-Content-Digest of a HEAD on the manifest, or None when the registry has no such tag."""
    status, headers, _ = _request(f"http://{address}/v2/{repository}/manifests/{reference}", method="HEAD")
    if status == 404:
        return None
    assert status == 200, f"HEAD {repository}:{reference} -> {status}"
    return headers.get("Docker-Content-Digest")


def manifest(address: str, repository: str, reference: str) -> dict[str, Any]:
    status, _, body = _request(f"http://{address}/v2/{repository}/manifests/{reference}")
    assert status == 200, f"GET manifest {repository}:{reference} -> {status}"
    data: dict[str, Any] = json.loads(body)
    return data


def tags(address: str, repository: str) -> list[str]:
    status, _, body = _request(f"http://{address}/v2/{repository}/tags/list")
    if status == 404:
        return []
    assert status == 200, f"tags of {repository} -> {status}"
    return list(json.loads(body).get("tags") or [])


def configs(address: str, repository: str, reference: str) -> list[dict[str, Any]]:
    """The image config of every platform manifest (attestations skipped)."""
    top = manifest(address, repository, reference)
    manifests = [top]
    if "manifests" in top:
        manifests = [
            manifest(address, repository, entry["digest"])
            for entry in top["manifests"]
            if (entry.get("platform") or {}).get("os") != "unknown"
        ]
    found = []
    for item in manifests:
        status, _, body = _request(f"http://{address}/v2/{repository}/blobs/{item['config']['digest']}")
        assert status == 200
        found.append(json.loads(body))
    return found


def platforms(address: str, repository: str, reference: str) -> list[str]:
    top = manifest(address, repository, reference)
    return sorted(
        f"{entry['platform']['os']}/{entry['platform']['architecture']}"
        for entry in top.get("manifests", [])
        if (entry.get("platform") or {}).get("os") not in (None, "unknown")
    )


def blob_status(address: str, repository: str, digest: str) -> int:
    """The status a GET of the blob answers with."""
    status, _, _ = _request(f"http://{address}/v2/{repository}/blobs/{digest}")
    return status


def delete_manifest(address: str, repository: str, digest: str) -> int:
    """DELETE a manifest by digest, as another tool would; the status the registry answers with."""
    status, _, _ = _request(f"http://{address}/v2/{repository}/manifests/{digest}", method="DELETE")
    return status
