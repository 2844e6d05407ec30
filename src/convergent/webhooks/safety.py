"""The SSRF guard: callbacks go only to public http(s) destinations, unless allowed by name.

Checked at registration and again before every send, since DNS can change in between; the send
then connects to an address it checked, so a second lookup (DNS rebinding) cannot redirect it.
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

__all__ = ["ALLOW_HOSTS_ENV", "AllowList", "Destination", "check_destination"]

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


# special-purpose ranges (IANA registries) on top of what ipaddress calls non-global; IPv6 must
# also be global unicast (2000::/3), which leaves out site-local fec0::/10, ULA, link-local, the
# IPv4-compatible ::/96 and mapped ::ffff:0:0/96 forms
_IPV4_SPECIAL = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
_IPV6_UNICAST = ipaddress.IPv6Network("2000::/3")
_IPV6_SPECIAL = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "2001::/23",  # Teredo, benchmarking, ORCHID and other IETF protocol assignments
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4: embeds an IPv4 address
        "3fff::/20",  # documentation
        "64:ff9b::/96",  # NAT64: embeds an IPv4 address
        "64:ff9b:1::/48",  # local-use NAT64
    )
)


def _is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv4Address):
        return address.is_global and not any(address in net for net in _IPV4_SPECIAL)
    return (
        address in _IPV6_UNICAST
        and address.is_global
        and not any(address in net for net in _IPV6_SPECIAL)
    )


@dataclass(frozen=True)
class Destination:
    """A checked callback URL: connect to ``addresses`` (never resolve ``host`` again)."""

    url: str
    host: str
    port: int
    #: the addresses that were checked; empty when the host is allowed by name
    addresses: tuple[IPAddress, ...]

    def pinned(self) -> tuple[str, dict[str, str], dict[str, str]]:
        """(URL with the first checked address, Host header, httpx extensions for TLS SNI)."""
        if not self.addresses:
            return self.url, {}, {}
        parts = urlsplit(self.url)
        address = self.addresses[0]
        literal = f"[{address}]" if address.version == 6 else str(address)
        netloc = literal if parts.port is None else f"{literal}:{parts.port}"
        host_header = parts.netloc
        extensions = {"sni_hostname": self.host} if parts.scheme == "https" else {}
        return parts._replace(netloc=netloc).geturl(), {"host": host_header}, extensions


async def check_destination(url: str, allow: AllowList | None = None) -> Destination:
    """Raise `UnsafeDestination` unless ``url`` is http(s) without credentials and every address
    it resolves to is public or allowed; the `Destination` names the addresses checked."""
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
    if parts.username is not None or parts.password is not None:
        raise UnsafeDestination(
            "the callback URL must not carry credentials (user:password@): receivers verify "
            "the signature instead"
        )
    port = port or (443 if parts.scheme == "https" else 80)
    if allow.allows_host(host):
        return Destination(url, host, port, ())
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = await _resolve(host, port)
    for address in addresses:
        if not (_is_public(address) or allow.allows_address(address)):
            raise UnsafeDestination(
                f"{host} resolves to the non-public address {address}; allow it with "
                f"{ALLOW_HOSTS_ENV}={host} if this is intended"
            )
    return Destination(url, host, port, tuple(addresses))


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
