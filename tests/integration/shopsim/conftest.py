"""Fixtures of the shop's outside world: the fake payment provider and exchange, served for real."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from convergent.store import Store
from convergent_shop.psp import Faults, create_psp_app
from convergent_shop.psp_client import PspClient
from convergent_shop.sim.servers import serve_app


@dataclass
class Psp:
    url: str
    store: Store
    client: PspClient


@pytest.fixture
async def psp(tmp_path: Path) -> AsyncIterator[Psp]:
    """A payment provider on a loopback port with its own SQLite ledger, no faults."""
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'psp.db'}")
    try:
        async with (
            serve_app(create_psp_app(store, Faults(seed=1))) as url,
            PspClient(url, timeout=2.0) as client,
        ):
            yield Psp(url, store, client)
    finally:
        await store.close()


@pytest.fixture
async def shop_store(store: Store) -> Store:
    """The test's database (SQLite and PostgreSQL) with the shop's tables created."""
    from convergent_shop import inventory, orders, payments, shipping, trading  # noqa: F401
    from convergent_shop.db import create_shop_tables

    async with store.begin() as conn:
        await create_shop_tables(conn)
    return store
