"""Push hand-made blobs and manifests to a loopback test registry over plain HTTP: cosign-style signatures,
OCI referrers with a ``subject``, indexes that share a child. Independent of buildonce's own client."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"


def _send(
    url: str, method: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, data=body or None, method=method, headers=headers or {})  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback test registry
        return response.status, dict(response.headers)


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(address: str, repository: str, data: bytes) -> dict[str, Any]:
    """Upload ``data`` in one POST and PUT; returns its descriptor (without a media type)."""
    found = digest(data)
    _, headers = _send(f"http://{address}/v2/{repository}/blobs/uploads/", "POST")
    location = headers["Location"]
    if location.startswith("/"):
        location = f"http://{address}{location}"
    separator = "&" if "?" in location else "?"
    _send(f"{location}{separator}digest={found}", "PUT", data, {"Content-Type": "application/octet-stream"})
    return {"digest": found, "size": len(data)}


def put_manifest(address: str, repository: str, reference: str, body: dict[str, Any]) -> dict[str, Any]:
    """PUT a manifest under a tag or its digest; returns its descriptor."""
    raw = json.dumps(body, separators=(",", ":")).encode()
    media_type = body["mediaType"]
    reference = reference or digest(raw)
    _send(f"http://{address}/v2/{repository}/manifests/{reference}", "PUT", raw, {"Content-Type": media_type})
    return {"mediaType": media_type, "digest": digest(raw), "size": len(raw)}


def cosign_signature(address: str, repository: str, subject: str, payload: bytes) -> dict[str, Any]:
    """A signature as cosign stores it without the referrers API: an image manifest under
    ``sha256-<hex>.sig`` whose one layer is the simple-signing payload."""
    config = push_blob(address, repository, b"{}")
    layer = push_blob(address, repository, payload)
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [
            {
                "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                **layer,
                "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQ-not-a-real-signature"},
            }
        ],
    }
    return put_manifest(address, repository, f"sha256-{subject.removeprefix('sha256:')}.sig", body)


def subject_referrer(address: str, repository: str, subject: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """An OCI 1.1 artifact with ``subject``, pushed by digest, and the referrers fallback tag
    ``sha256-<hex>`` (an index listing it), as clients do for a registry without the referrers API."""
    config = push_blob(address, repository, b"{}")
    layer = push_blob(address, repository, payload)
    artifact_type = "application/vnd.example.sbom.v1+json"
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_CONFIG, **config},
        "layers": [{"mediaType": artifact_type, **layer}],
        "subject": subject,
    }
    referrer = put_manifest(address, repository, "", body)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{**referrer, "artifactType": artifact_type}]}
    put_manifest(address, repository, f"sha256-{subject['digest'].removeprefix('sha256:')}", index)
    return referrer


def index_of(address: str, repository: str, tag: str, children: list[dict[str, Any]]) -> dict[str, Any]:
    """An image index of the given child descriptors (platforms included), under ``tag``."""
    return put_manifest(address, repository, tag, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})


def raw_manifest(address: str, repository: str, reference: str) -> tuple[bytes, str]:
    """A manifest's exact bytes and media type."""
    accept = ", ".join(
        (
            OCI_INDEX,
            OCI_MANIFEST,
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        )
    )
    request = urllib.request.Request(
        f"http://{address}/v2/{repository}/manifests/{reference}", headers={"Accept": accept}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback test registry
        return response.read(), response.headers["Content-Type"]


def descriptor_of(address: str, repository: str, reference: str) -> dict[str, Any]:
    raw, media_type = raw_manifest(address, repository, reference)
    return {"mediaType": media_type, "digest": digest(raw), "size": len(raw)}


def retag(address: str, repository: str, reference: str, tag: str) -> None:
    """Put the manifest at ``reference`` under ``tag`` too, byte for byte (the same digest)."""
    raw, media_type = raw_manifest(address, repository, reference)
    _send(f"http://{address}/v2/{repository}/manifests/{tag}", "PUT", raw, {"Content-Type": media_type})
