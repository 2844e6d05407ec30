"""`convergent serve` mounts the operator console at /console, for admin keys only."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.acceptance.conftest import Server
from tests.acceptance.resources.harness import database_for, running_shop


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One shop per database for the module (each test makes an admin key of its own name)."""
    tmp = tmp_path_factory.mktemp("console-mount")
    with running_shop(database_for(request, tmp), tmp) as shop:
        yield shop


def _admin_key(database_url: str, name: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "convergent", "keys", "create", name, "--admin"],
        env={"CONVERGENT_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def test_serve_mounts_the_console_behind_an_admin_key(server: Server) -> None:
    with server.client() as http:
        refused = http.get("/console/runs", headers={"Accept": "text/html"})
        assert refused.status_code == 303
        assert refused.headers["location"].startswith("/console/login")
        key = _admin_key(server.database_url, "ops-console")
        login = http.post("/console/login", data={"key": key, "next": "/console/runs"})
        assert login.status_code == 303
        runs = http.get("/console/runs")
        assert runs.status_code == 200
        assert "/console/static/htmx.min.js" in runs.text
        assert http.get("/console/static/console.css").status_code == 200


def test_serve_mounts_the_admin_api_for_admin_keys_only(server: Server) -> None:
    with server.client() as http:  # an ordinary client key
        assert http.get("/admin/dead-letters").status_code == 403
    with server.client(as_client=None) as http:
        assert http.get("/admin/dead-letters").status_code == 401
        admin = {"X-Api-Key": _admin_key(server.database_url, "ops-admin-api")}
        letters = http.get("/admin/dead-letters", headers=admin)
        assert letters.status_code == 200
        unknown = http.get("/admin/runs/00000000-0000-7000-8000-000000000000", headers=admin)
        assert unknown.status_code == 404
        assert unknown.headers["content-type"].startswith("application/problem+json")
