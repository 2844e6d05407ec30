"""API keys on SQLite and PostgreSQL: issued once, stored hashed, verified, revoked, listed."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import sqlalchemy as sa
from fastapi import Depends, FastAPI
from typer.testing import CliRunner

from convergent.auth import (
    Principal,
    create_key,
    forget_cached,
    list_keys,
    require_admin,
    require_key,
    revoke_key,
    verify_key,
)
from convergent.cli import app as cli_app
from convergent.errors import AlreadyExists, ConfigurationError, NotFound
from convergent.http.problem import install_problem_handlers
from convergent.store import Store
from convergent.store.schema import api_keys


async def _issue(store: Store, name: str, admin: bool = False) -> str:
    async with store.begin() as conn:
        _key, secret = await create_key(conn, name, admin=admin)
    return secret


async def test_a_key_verifies_as_its_principal_and_only_a_hash_is_stored(store: Store) -> None:
    secret = await _issue(store, "ops-alice", admin=True)
    principal = await verify_key(store, secret)
    assert principal is not None
    assert (principal.name, principal.admin) == ("ops-alice", True)
    async with store.read() as conn:
        row = (await conn.execute(sa.select(api_keys))).one()
    stored = json.dumps([str(v) for v in row])
    assert secret not in stored
    assert secret.split("_", 2)[2] not in stored
    assert row.last_used_at is not None


@pytest.mark.parametrize(
    "presented",
    [None, "", "nonsense", "cvk_", "cvk_abc_", "cvk_000000000000_wrongsecret"],
)
async def test_unknown_or_malformed_keys_verify_as_nobody(
    store: Store, presented: str | None
) -> None:
    await _issue(store, "someone")
    assert await verify_key(store, presented) is None


async def test_a_wrong_secret_with_a_real_prefix_is_refused(store: Store) -> None:
    secret = await _issue(store, "svc")
    forged = secret[: secret.rindex("_") + 1] + "A" * 43
    assert await verify_key(store, forged) is None


async def test_a_revoked_key_stops_working_within_the_cache_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVERGENT_API_KEY_CACHE_SECONDS", "0.2")
    secret = await _issue(store, "leaver", admin=True)
    assert await verify_key(store, secret) is not None
    async with store.begin() as conn:
        revoked = await revoke_key(conn, "leaver")
    assert revoked.revoked_at is not None
    deadline = asyncio.get_running_loop().time() + 5
    while await verify_key(store, secret) is not None:  # another process's cache, as it were
        assert asyncio.get_running_loop().time() < deadline, "revoked key still accepted"
        await asyncio.sleep(0.05)


async def test_names_are_unique_even_after_a_revoke(store: Store) -> None:
    await _issue(store, "ci")
    async with store.begin() as conn:
        await revoke_key(conn, "ci")
    with pytest.raises(AlreadyExists, match="choose another name"):
        await _issue(store, "ci")
    with pytest.raises(ConfigurationError, match="not a key name"):
        await _issue(store, " padded ")
    async with store.begin() as conn:
        with pytest.raises(NotFound, match="convergent keys list"):
            await revoke_key(conn, "nobody")


async def test_list_shows_names_and_prefixes_never_secrets(store: Store) -> None:
    first = await _issue(store, "a", admin=True)
    await _issue(store, "b")
    async with store.read() as conn:
        keys = await list_keys(conn)
    assert [(k.name, k.admin) for k in keys] == [("a", True), ("b", False)]
    assert first.split("_")[1] == keys[0].prefix
    assert "secret" not in json.dumps([k.to_dict() for k in keys])


async def test_dependencies_answer_401_403_and_pass_admins(store: Store) -> None:
    admin, client = await _issue(store, "root", admin=True), await _issue(store, "shop-client")
    app = FastAPI()
    app.state.store = store
    install_problem_handlers(app)

    @app.get("/mine")
    async def mine(who: Principal = Depends(require_key)) -> dict[str, str]:  # noqa: B008
        return {"name": who.name}

    @app.get("/ops")
    async def ops(who: Principal = Depends(require_admin)) -> dict[str, str]:  # noqa: B008
        return {"name": who.name}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        missing = await http.get("/mine")
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/problem+json"
        assert "Bearer" in missing.headers["www-authenticate"]
        assert (await http.get("/mine", headers={"X-Api-Key": "cvk_x_y"})).status_code == 401
        ok = await http.get("/mine", headers={"Authorization": f"Bearer {client}"})
        assert ok.json() == {"name": "shop-client"}
        forbidden = await http.get("/ops", headers={"X-Api-Key": client})
        assert forbidden.status_code == 403
        assert forbidden.json()["type"].endswith("/forbidden")
        assert (await http.get("/ops", headers={"X-Api-Key": admin})).json() == {"name": "root"}
    forget_cached(store)


def test_cli_prints_the_key_once_and_list_never_shows_it(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVERGENT_DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    created = runner.invoke(cli_app, ["keys", "create", "ops", "--admin"])
    assert created.exit_code == 0, created.output
    secret = created.stdout.splitlines()[0]
    assert secret.startswith("cvk_")
    listed = runner.invoke(cli_app, ["keys", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [k["name"] for k in json.loads(listed.stdout)] == ["ops"]
    assert secret not in listed.output
    again = runner.invoke(cli_app, ["keys", "create", "ops"])
    assert again.exit_code == 1
    assert "choose another name" in again.output
    revoked = runner.invoke(cli_app, ["keys", "revoke", "ops"])
    assert revoked.exit_code == 0, revoked.output
    assert json.loads(runner.invoke(cli_app, ["keys", "list", "--json"]).stdout)[0]["revoked_at"]
