"""API keys for tests that drive the shop in-process (acceptance tests use Server.key)."""

from __future__ import annotations

from convergent.auth import create_key
from convergent.store import Store


async def client_key(store: Store, name: str, *, admin: bool = False) -> str:
    """A new key's secret, issued as `convergent keys create NAME` issues it."""
    async with store.begin() as conn:
        _, secret = await create_key(conn, name, admin=admin)
    return secret
