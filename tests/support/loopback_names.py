"""A registry host name that resolves to 127.0.0.1 in this process alone, for Docker's insecure-registry rule."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from buildonce.registry import http

TEST_NAME = "registry.test"  # a reserved name (RFC 2606): it never resolves elsewhere


def resolve_test_name(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], None]:
    """Connect ``registry.test`` to 127.0.0.1; the function returned, ``say([...])``, makes the client's check
    of whether Docker treats a registry as insecure see other addresses for it (a name that resolves
    elsewhere, reaching a test server all the same)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == TEST_NAME else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    def say(addresses: list[str]) -> None:
        real_addresses = http.addresses
        monkeypatch.setattr(http, "addresses", lambda host: addresses if host == TEST_NAME else real_addresses(host))

    return say
