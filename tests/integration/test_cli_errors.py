"""Every command meets an unmigrated database, a missing table, a bad URL, an unreachable
database or broker with one line naming the fix, never a traceback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from convergent.cli import app
from convergent.drill.processes import free_port
from convergent.store import Store

ANY_ID = str(uuid.uuid4())
ONE_SHOT = [
    ["runs", "list"],
    ["runs", "show", ANY_ID],
    ["dlq", "list"],
    ["dlq", "show", ANY_ID],
    ["dlq", "discard", ANY_ID],
    ["webhooks", "endpoints", "list"],
    ["webhooks", "attempts", ANY_ID],
    ["webhooks", "endpoints", "add", "https://example.com/hook"],
    ["sweep"],
    ["migrate", "--check"],
    ["schedules", "list"],
    ["schedules", "pause", "nightly"],
]


def _one_line_error(out: Result, *expected: str, command: object = "") -> str:
    where = f"{command}: {out.output}"
    assert out.exit_code == 1, where
    assert "Traceback" not in out.output, where
    lines = out.output.strip().splitlines()
    assert len(lines) == 1, where
    assert lines[0].startswith("error: "), where
    for text in expected:
        assert text in lines[0], where
    return lines[0]


def test_an_unmigrated_database_says_run_convergent_migrate(blank_database_url: str) -> None:
    for command in ONE_SHOT:
        out = CliRunner().invoke(app, [*command, "--database-url", blank_database_url])
        _one_line_error(out, "has no convergent tables", "run `convergent migrate", command=command)


def test_an_unreachable_database_says_what_to_check() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    for command in ONE_SHOT:
        out = CliRunner().invoke(app, [*command, "--database-url", url])
        _one_line_error(out, "cannot reach the database", "check --database-url", command=command)


@pytest.mark.parametrize(
    ("url", "expected"),
    [("mysql://db/x", "unsupported database 'mysql'"), ("::::", "cannot parse database URL")],
)
@pytest.mark.parametrize("command", [["runs", "list"], ["dlq", "list"], ["migrate"]])
def test_a_wrong_database_url_names_the_accepted_ones(
    command: list[str], url: str, expected: str
) -> None:
    out = CliRunner().invoke(app, [*command, "--database-url", url])
    _one_line_error(out, expected, "postgresql+asyncpg://")


def test_a_dropped_table_says_run_convergent_migrate(blank_database_url: str) -> None:
    async def drop() -> None:
        async with Store(blank_database_url) as store:
            await store.migrate()
            async with store.begin() as conn:
                await conn.execute(sa.text("DROP TABLE convergent_run_steps"))
                await conn.execute(sa.text("DROP TABLE convergent_runs"))

    asyncio.run(drop())
    out = CliRunner().invoke(app, ["runs", "list", "--database-url", blank_database_url])
    _one_line_error(out, "no table convergent_runs", "run `convergent migrate`")


def test_a_wrong_broker_url_is_one_line(sqlite_url: str) -> None:
    out = CliRunner().invoke(
        app, ["relay", "--database-url", sqlite_url, "--broker-url", "amqp://rabbit"]
    )
    _one_line_error(out, "unsupported broker URL", "nats://host:4222")


# long-running commands, as real processes ----------------------------------------------------


def _spawn(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    env.pop("CONVERGENT_DATABASE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "convergent", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "myapp.py").write_text('"""declares nothing: the checks come first"""\n')
    return tmp_path


def test_a_worker_on_an_unmigrated_database_exits_at_once(
    blank_database_url: str, app_dir: Path
) -> None:
    _exits_at_once(["worker", "--import", "myapp"], blank_database_url, app_dir)


@pytest.mark.parametrize("command", [["relay"], ["consume"]])
def test_relay_and_consume_on_an_unmigrated_database_exit_at_once(
    command: list[str], app_dir: Path
) -> None:
    _exits_at_once(command, f"sqlite+aiosqlite:///{app_dir / 'blank.db'}", app_dir)


def _exits_at_once(command: list[str], blank_database_url: str, app_dir: Path) -> None:
    if command == ["consume"]:
        (app_dir / "myapp.py").write_text(
            "from convergent.outbox.consumer import consumer\n"
            "from convergent.topics import declare_topic\n"
            "declare_topic('t.events')\n"
            "@consumer('t.events', group='g')\n"
            "async def handle(conn, message):\n    pass\n"
        )
        command = ["consume", "--import", "myapp"]
    proc = _spawn([*command, "--database-url", blank_database_url], app_dir)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [err.strip()]
    assert "has no convergent tables: run `convergent migrate" in err


def _wait_for_line(proc: subprocess.Popen[str], text: str, timeout: float = 30.0) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if text in line:
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no line with {text!r}; exit status {proc.poll()}")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def test_a_worker_waits_for_an_unreachable_database_in_one_line(app_dir: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    proc = _spawn(["worker", "--import", "myapp", "--database-url", url], app_dir)
    try:
        line = _wait_for_line(proc, "waiting:")
        assert "cannot reach the database" in line
        assert "check --database-url" in line
        assert "Traceback" not in _stop(proc)
    finally:
        proc.kill()


def test_a_relay_waits_for_an_unreachable_broker_in_one_line(
    sqlite_url: str, app_dir: Path
) -> None:
    broker = f"nats://127.0.0.1:{free_port()}"
    proc = _spawn(["relay", "--database-url", sqlite_url, "--broker-url", broker], app_dir)
    try:
        line = _wait_for_line(proc, "waiting:")
        assert f"cannot reach NATS at {broker}" in line
        assert "check --broker-url" in line
        assert "Traceback" not in _stop(proc)
    finally:
        proc.kill()


def test_a_plugin_command_with_a_wrong_url_is_one_line(app_dir: Path) -> None:
    proc = _spawn(["psp", "--database-url", "mysql://db/x"], app_dir)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert err.strip().splitlines() == [err.strip()]
    assert "unsupported database 'mysql'" in err
