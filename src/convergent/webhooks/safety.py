"""The SSRF guard: callbacks go only to public http(s) destinations, unless allowed by name.

Checked at registration and again before every send, since DNS can change in between.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from convergent import settings
from convergent.errors import UnsafeDestination

__all__ = ["ALLOW_HOSTS_ENV", "AllowList", "check_destination"]

ALLOW_HOSTS_ENV = "CONVERGENT_WEBHOOK_ALLOW_HOSTS"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AllowList:
    """Hosts and networks that may be reached even though they are not public."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, items: Iterable[str]) -> AllowList:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for item in (i.strip() for i in items):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item.lower())
        return cls(frozenset(hosts), tuple(networks))

    @classmethod
    def from_env(cls) -> AllowList:
        return cls.parse(settings.load().webhook_allow_hosts)

    def allows_host(self, host: str) -> bool:
        return host.lower() in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in net for net in self.networks if net.version == address.version)


def _is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _is_public(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


async def check_destination(url: str, allow: AllowList | None = None) -> None:
    """Raise `UnsafeDestination` unless ``url`` is http(s) and every address it resolves to is
    public or allowed."""
    allow = AllowList.from_env() if allow is None else allow
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # e.g. "http://[::1/hook" or a port out of range
        raise UnsafeDestination(f"the callback URL is malformed: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeDestination(f"only http and https callbacks are allowed, not {parts.scheme!r}")
    if not host:
        raise UnsafeDestination("the callback URL has no host")
    if allow.allows_host(host):
        return
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = await _resolve(host, port or (443 if parts.scheme == "https" else 80))
    for address in addresses:
        if not (_is_public(address) or allow.allows_address(address)):
            raise UnsafeDestination(
                f"{host} resolves to the non-public address {address}; allow it with "
                f"{ALLOW_HOSTS_ENV}={host} if this is intended"
            )


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UnsafeDestination(f"cannot resolve {host}: {exc}") from exc
    out: list[IPAddress] = []
    for info in infos:
        raw = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        out.append(ipaddress.ip_address(raw))
    return out
