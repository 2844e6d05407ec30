"""A callback connects to the address the SSRF guard checked, never to a second DNS answer."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from convergent.webhooks import AllowList, WebhookSettings, safety
from convergent.webhooks.sender import Outcome, send
from tests.integration.webhooks.receiver import Receiver


async def test_the_send_uses_the_checked_address_not_a_new_lookup(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []

    async def resolve(host: str, port: int) -> list[safety.IPAddress]:
        lookups.append(host)
        return [ipaddress.ip_address("127.0.0.1")]

    # the guard's lookup is the only one: "rebind.invalid" resolves nowhere else
    monkeypatch.setattr(safety, "_resolve", resolve)
    settings = WebhookSettings(allow=AllowList.parse(["127.0.0.0/8"]))
    url = f"http://rebind.invalid:{receiver.port}/hook"
    async with httpx.AsyncClient() as client:
        result = await send(client, url, "msg_1", {"a": 1}, ["whsec_" + "a" * 32], 1, settings)
    assert result.outcome == Outcome.SUCCEEDED, result
    assert lookups == ["rebind.invalid"]
    assert receiver.requests[0].headers["host"] == f"rebind.invalid:{receiver.port}"
