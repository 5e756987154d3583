"""Which proxy a request goes through, read from the environment exactly as requests (and urllib) read it.

``HTTPS_PROXY``, ``HTTP_PROXY`` and ``ALL_PROXY`` (lower-case spellings win) name the proxy for a scheme;
``NO_PROXY`` lists the hosts that go direct: names and domain suffixes, ``host:port``, IPv4 addresses and
networks, or ``*``. Pure: the environment is passed in.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from buildonce.registry.auth import basic_authorization

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Proxy:
    """An http:// or https:// proxy, and the ``Proxy-Authorization`` its URL's credentials make."""

    scheme: str
    host: str
    port: int
    authorization: str | None

    @property
    def key(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}:{self.authorization or ''}"


def _environment_proxies(environ: Mapping[str, str]) -> dict[str, str]:
    """``<scheme>_proxy`` variables by scheme, lower case winning, as urllib reads them."""
    proxies: dict[str, str] = {}
    for name, value in environ.items():
        if value and name.lower().endswith("_proxy"):
            proxies[name.lower()[:-6]] = value
    if "REQUEST_METHOD" in environ:  # as a CGI script: HTTP_PROXY may come from a client's "Proxy:" header
        proxies.pop("http", None)
    for name, value in environ.items():
        if name.endswith("_proxy") and name == name.lower():
            if value:
                proxies[name[:-6]] = value
            else:
                proxies.pop(name[:-6], None)
    return proxies


def bypasses_proxy(url: str, environ: Mapping[str, str]) -> bool:
    """Whether ``NO_PROXY`` (or ``no_proxy``) lets ``url`` go direct, as requests decides it."""
    parts = urlsplit(url)
    hostname = parts.hostname
    if hostname is None:
        return True
    no_proxy = environ.get("no_proxy") or environ.get("NO_PROXY")
    if no_proxy:
        entries = [entry for entry in no_proxy.replace(" ", "").split(",") if entry]
        if _is_ipv4(hostname):
            for entry in entries:
                if _in_network(hostname, entry) if _is_cidr(entry) else hostname == entry:
                    return True
        else:
            with_port = f"{hostname}:{parts.port}" if parts.port else hostname
            for entry in entries:
                name = entry.lstrip(".")
                if name in (hostname, with_port) or hostname.endswith("." + name) or with_port.endswith("." + name):
                    return True
    return _urllib_bypass(hostname, _environment_proxies(environ))


def _urllib_bypass(host: str, proxies: Mapping[str, str]) -> bool:
    """urllib's ``proxy_bypass_environment``, which requests also asks: ``*``, or a name or domain suffix."""
    no_proxy = proxies.get("no")
    if no_proxy is None:
        return False
    if no_proxy == "*":
        return True
    host = host.lower()
    found = re.fullmatch(r"(.*):([0-9]*)", host, re.DOTALL)
    hostonly = found.group(1) if found else host
    for entry in no_proxy.split(","):
        name = entry.strip().lstrip(".").lower()
        if name and (name in (hostonly, host) or hostonly.endswith("." + name) or host.endswith("." + name)):
            return True
    return False


def _is_ipv4(text: str) -> bool:
    try:
        socket.inet_aton(text)
    except OSError:
        return False
    return True


def _is_cidr(text: str) -> bool:
    address, sep, mask = text.partition("/")
    if not sep or "/" in mask or not mask.strip().lstrip("+-").isdigit() or not 1 <= int(mask) <= 32:
        return False
    return _is_ipv4(address)


def _in_network(address: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(socket.inet_ntoa(socket.inet_aton(address))) in ipaddress.ip_network(
            network, strict=False
        )
    except ValueError:
        return False


def proxy_for(url: str, environ: Mapping[str, str]) -> str | None:
    """The proxy URL the environment names for ``url`` (``<scheme>_proxy``, else ``all_proxy``), if any."""
    if bypasses_proxy(url, environ):
        return None
    proxies = _environment_proxies(environ)
    parts = urlsplit(url)
    return proxies.get(parts.scheme) or proxies.get("all")


def parse_proxy(text: str) -> Proxy:
    """The proxy a ``*_proxy`` value names (``host:port`` means http://); ``ValueError`` for one not usable."""
    parts = urlsplit(text if "://" in text else f"http://{text}")
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        # requests needs PySocks for socks:// proxies, which it does not install: they never worked.
        raise ValueError(
            f"the proxy {scheme}://{parts.hostname} is not supported: name an http:// or https:// proxy in "
            "HTTPS_PROXY, HTTP_PROXY or ALL_PROXY"
        )
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError(f"the proxy URL {parts.hostname} has no valid port") from None
    if not parts.hostname:
        raise ValueError("a proxy URL names no host")
    authorization = None
    if parts.username is not None and parts.password is not None:
        authorization = basic_authorization(unquote(parts.username), unquote(parts.password))
    return Proxy(scheme, parts.hostname, port, authorization)
