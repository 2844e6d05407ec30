"""Browser tests: real Chromium (Debian's /usr/bin/chromium, driven by Playwright) against a real
`convergent console` and `convergent worker` on a database with a workload (tests/browser/
workload.py), once on SQLite and once on PostgreSQL."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from convergent.auth import create_key
from convergent.drill import free_port
from convergent.store import Store
from tests.browser.workload import FIXES_ENV, fix_path, seed
from tests.conftest import CI, PG_ADMIN_URL, _migrate, _pg_admin, port_open, service_missing

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def run(coro: Any) -> Any:
    """asyncio.run in a thread of its own: Playwright's sync API keeps a loop in this one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Receiver:
    """A webhook receiver on loopback: 503 with a body until ``ok`` is set, then 204."""

    def __init__(self) -> None:
        self.ok = False
        self.hits = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.hits += 1
                if receiver.ok:
                    self.send_response(204)
                    self.end_headers()
                    return
                body = b"down for maintenance until 14:00"
                self.send_response(503)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Env:
    base_url: str
    key: str
    database_url: str
    ids: dict[str, Any]
    receiver: Receiver
    fixes: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)


# module scope, not session: while Playwright's sync API is alive it keeps an event loop marked
# running in this thread, and every later test that calls asyncio.run would fail
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        service_missing("Chromium", "apt-get install -y chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / 'console.db'}"
        run(_migrate(url))
        yield url
        return
    if not port_open(PG_ADMIN_URL, 5432):
        service_missing("PostgreSQL", "pg_ctlcluster ... start")
    name = f"convergent_console_{os.getpid()}_{secrets.token_hex(3)}"
    run(_pg_admin([f'CREATE DATABASE "{name}"']))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    run(_migrate(url))
    try:
        yield url
    finally:
        run(
            _pg_admin(
                [
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}'",
                    f'DROP DATABASE IF EXISTS "{name}"',
                ]
            )
        )


async def _prepare(url: str, receiver: Receiver) -> tuple[str, dict[str, Any]]:
    async with Store(url) as store:
        async with store.begin() as conn:
            _k, key = await create_key(conn, "ops-alice", admin=True)
        return key, await seed(store, receiver.url)


def _spawn(args: list[str], url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "CONVERGENT_FAULTS"},
        "CONVERGENT_DATABASE_URL": url,
        "CONVERGENT_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "CONVERGENT_CONSOLE_REFRESH_SECONDS": "1",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "convergent", *args], env=env, stdout=out, stderr=out
        )


# PostgreSQL by default, to keep the suite short: the same pages, queries and actions run on both
# databases in tests/integration/console; CONVERGENT_BROWSER_DATABASES=sqlite,postgres runs both
DATABASES = os.environ.get("CONVERGENT_BROWSER_DATABASES", "postgres").split(",")


@pytest.fixture(scope="module", params=DATABASES)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp(f"console-{request.param}")
    receiver = Receiver()
    databases = _database(request.param, tmp)
    url = next(databases)
    port = free_port()
    e = Env(f"http://127.0.0.1:{port}", "", url, {}, receiver, tmp / "fixes")
    e.fixes.mkdir()
    before = os.environ.get(FIXES_ENV)
    os.environ[FIXES_ENV] = str(e.fixes)  # for the worker, and deploy_fix in this process
    try:  # the processes boot while the workload is written
        e.processes.append(
            _spawn(
                ["worker", "--import", "tests.browser.workload", "--poll-interval", "0.2"],
                url,
                tmp / "worker.log",
            )
        )
        e.processes.append(
            _spawn(["console", "--port", str(port), "--no-migrate"], url, tmp / "console.log")
        )
        e.key, e.ids = run(_prepare(url, receiver))
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(e.base_url + "/login", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or e.processes[1].poll() is not None:
                raise RuntimeError((tmp / "console.log").read_text())
            time.sleep(0.1)
        yield e
    finally:
        for p in e.processes:
            p.terminate()
        for p in e.processes:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        receiver.close()
        if before is None:
            os.environ.pop(FIXES_ENV, None)
        else:
            os.environ[FIXES_ENV] = before
        for _ in databases:  # drop the PostgreSQL database
            pass


@pytest.fixture
def page(browser: Browser, env: Env) -> Iterator[Page]:
    """A browser tab logged in with the admin key, through the login form."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    tab.goto(env.base_url + "/runs")
    assert "/login" in tab.url
    tab.fill("#key", env.key)
    tab.click("button[type=submit]")
    tab.wait_for_url(env.base_url + "/runs")
    yield tab
    context.close()


def screenshot_dir(tmp_path: Path) -> Path:
    """CONVERGENT_SCREENSHOTS=docs/console writes the pictures docs/console.md shows."""
    target = os.environ.get("CONVERGENT_SCREENSHOTS")
    return Path(target) if target else tmp_path


def deploy_fix(env: Env, what: str) -> None:
    """What an operator does before resuming: the workload's failing piece now succeeds."""
    assert os.environ[FIXES_ENV] == str(env.fixes)
    fix_path(what).touch()


__all__ = ["CI", "Env", "Receiver", "deploy_fix", "screenshot_dir"]
