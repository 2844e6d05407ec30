from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from convergent.errors import UnsafeDestination
from convergent.webhooks import AllowList, check_destination

NOTHING = AllowList()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://localhost/hook",
    ],
)
async def test_private_loopback_and_link_local_destinations_are_refused(url: str) -> None:
    with pytest.raises(UnsafeDestination):
        await check_destination(url, NOTHING)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "http:///nohost"])
async def test_only_http_and_https_urls_with_a_host_are_accepted(url: str) -> None:
    with pytest.raises(UnsafeDestination):
        await check_destination(url, NOTHING)


async def test_a_public_address_is_accepted() -> None:
    await check_destination("https://93.184.216.34/hook", NOTHING)


async def test_an_allowed_network_lets_a_private_address_through() -> None:
    await check_destination("http://10.1.2.3:8080/hook", AllowList.parse(["10.0.0.0/8"]))


async def test_an_allowed_host_name_is_accepted_without_resolving() -> None:
    await check_destination("http://receiver.internal/hook", AllowList.parse(["receiver.internal"]))


async def test_the_allow_list_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVERGENT_WEBHOOK_ALLOW_HOSTS", "127.0.0.1, other.test")
    await check_destination("http://127.0.0.1:9/hook")


@pytest.mark.parametrize(
    "url",
    [
        "http://[64:ff9b::a00:1]/hook",  # NAT64 of 10.0.0.1
        "http://[64:ff9b::5db8:d822]/hook",  # NAT64 of a public address: still refused
        "http://[64:ff9b:1::1]/hook",
        "http://[2002:a00:1::]/hook",  # 6to4 of 10.0.0.1
        "http://[::a00:1]/hook",  # IPv4-compatible
        "http://[::7f00:1]/hook",
        "http://[::ffff:5db8:d822]/hook",  # IPv4-mapped, even of a public address
        "http://[fec0::1]/hook",  # site-local
        "http://[fc00::1]/hook",
        "http://[fe80::1]/hook",
        "http://[ff02::1]/hook",
        "http://[2001::1]/hook",  # Teredo
        "http://[2001:db8::1]/hook",
        "http://[::]/hook",
        "http://100.64.0.1/hook",
        "http://198.18.0.1/hook",
        "http://192.0.0.8/hook",
        "http://240.0.0.1/hook",
        "http://255.255.255.255/hook",
        "http://224.0.0.1/hook",
        "http://[::1/hook",  # malformed
        "http://example.com:99999/hook",
        "https://user:secret@93.184.216.34/hook",  # credentials
        "https://token@93.184.216.34/hook",
    ],
)
async def test_special_purpose_ranges_credentials_and_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeDestination):
        await check_destination(url, NOTHING)


async def test_a_public_ipv6_address_is_accepted() -> None:
    await check_destination("https://[2606:2800:220:1:248:1893:25c8:1946]/hook", NOTHING)


async def test_the_destination_pins_the_checked_address_and_keeps_the_name_for_tls() -> None:
    checked = await check_destination("https://93.184.216.34:8443/a?b=1", NOTHING)
    assert checked.addresses == (ipaddress.ip_address("93.184.216.34"),)
    url, host, extensions = dataclasses.replace(checked, host="hooks.example").pinned()
    assert url == "https://93.184.216.34:8443/a?b=1"
    assert host == {"host": "93.184.216.34:8443"}
    assert extensions == {"sni_hostname": "hooks.example"}
