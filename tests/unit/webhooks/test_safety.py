from __future__ import annotations

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
