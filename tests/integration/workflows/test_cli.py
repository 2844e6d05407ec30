"""`convergent runs list|show` read runs; `convergent worker` needs an app module it can import."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from convergent.cli import app
from convergent.cli.app import console
from convergent.store import Store
from convergent.workflows import start
from tests.integration.workflows.test_engine import twice


@pytest.fixture
async def run_id(sqlite_url: str) -> str:
    async with Store(sqlite_url) as store:
        return str(await start(store, twice, 3, key="cli"))


def test_runs_list_shows_the_run(
    sqlite_url: str, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "_width", 200)  # a wide terminal: no truncated cells
    out = CliRunner().invoke(app, ["runs", "list", "--database-url", sqlite_url])
    assert out.exit_code == 0, out.output
    assert run_id in out.output
    assert "tests.engine.twice" in out.output
    assert "pending" in out.output


def test_runs_show_prints_the_run_and_its_key(sqlite_url: str, run_id: str) -> None:
    out = CliRunner().invoke(app, ["runs", "show", run_id, "--database-url", sqlite_url])
    assert out.exit_code == 0, out.output
    assert "key=cli" in out.output


def test_runs_show_with_a_bad_id_says_where_to_find_one(sqlite_url: str) -> None:
    out = CliRunner().invoke(app, ["runs", "show", "nope", "--database-url", sqlite_url])
    assert out.exit_code == 1
    assert "convergent runs list" in out.output


def test_worker_with_an_unknown_module_says_how_to_fix_it(sqlite_url: str) -> None:
    out = CliRunner().invoke(
        app, ["worker", "--database-url", sqlite_url, "--import", "no_such_module_xyz"]
    )
    assert out.exit_code == 1
    assert "--import" in out.output


def test_worker_without_an_app_module_refuses_to_start(sqlite_url: str) -> None:
    out = CliRunner().invoke(app, ["worker", "--database-url", sqlite_url])
    assert out.exit_code == 2  # a usage error: no silent default app
    assert "--import" in out.output
