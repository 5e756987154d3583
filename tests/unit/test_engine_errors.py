from __future__ import annotations

import pytest

from buildonce.docker.engine import _digest_of
from buildonce.docker.messages import classify_push_error


@pytest.mark.parametrize(
    "message",
    [
        "received unexpected HTTP status: 503 Service Unavailable",
        "received unexpected HTTP status: 500 Internal Server Error",
        "toomanyrequests: too many requests",
        "dial tcp 127.0.0.1:5000: connect: connection refused",
        "read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer",
        'Patch "http://127.0.0.1:5000/v2/x/blobs/uploads/abc": EOF',
        "net/http: request canceled (Client.Timeout exceeded while awaiting headers)",
        "context deadline exceeded (i/o timeout)",
    ],
)
def test_transient(message: str) -> None:
    assert classify_push_error("127.0.0.1:5000/x:1", message).transient


@pytest.mark.parametrize(
    ("message", "hint"),
    [
        ("unauthorized: authentication required", "docker/login-action"),
        ("denied: requested access to the resource is denied", "packages: write"),
        ("name unknown: repository name not known to registry", "does not know this repository"),
        ("manifest invalid: manifest invalid", "rejected the image"),
        ("something nobody has seen before", "something nobody"),
    ],
)
def test_permanent(message: str, hint: str) -> None:
    error = classify_push_error("ghcr.io/acme/x:1", message)
    assert not error.transient
    assert hint in str(error)
    assert "ghcr.io/acme/x:1" in str(error)


def test_digest_from_status_or_aux() -> None:
    digest = "sha256:" + "b" * 64
    assert _digest_of({"status": f"pr-1-abc: digest: {digest} size: 855"}) == digest
    assert _digest_of({"aux": {"Tag": "x", "Digest": digest, "Size": 1}}) == digest
    assert _digest_of({"status": "Pushed", "id": "abc"}) == ""


@pytest.mark.parametrize(
    "message",
    [
        'failed commit on ref "manifest-sha256:ab12": unexpected status from PUT request to '
        "http://127.0.0.1:5/v2/r/manifests/v1: 503 Service Unavailable",
        "unexpected status from POST request to http://127.0.0.1:5/v2/r/blobs/uploads/: 502 Bad Gateway",
        'failed commit on ref "layer-sha256:cd": failed to do request: Put "https://127.0.0.1:5/v2/r/manifests/v1": '
        "read tcp 127.0.0.1:1->127.0.0.1:5: read: connection reset by peer",
        'failed to do request: Put "https://127.0.0.1:5/v2/r/manifests/v1": EOF',
        "unexpected status from HEAD request to http://x/v2/r/blobs/sha256:1: 429 Too Many Requests",
    ],
)
def test_transient_as_the_engine_reports_them(message: str) -> None:
    assert classify_push_error("127.0.0.1:5/r:v1", message).transient


def test_digits_in_digests_are_not_status_codes() -> None:
    message = 'failed commit on ref "layer-sha256:503 404": unexpected status from PUT request: 400 Bad Request'
    assert not classify_push_error("r:v1", message).transient


def test_no_basic_auth_credentials_is_a_credentials_error() -> None:
    error = classify_push_error("127.0.0.1:5/r:v1", "authorization failed: no basic auth credentials")
    assert not error.transient
    assert "username and password" in str(error)
