"""`convergent serve` mounts the operator console at /console, for admin keys only."""

from __future__ import annotations

import subprocess
import sys

from tests.acceptance.conftest import Server


def _admin_key(database_url: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "convergent", "keys", "create", "ops", "--admin"],
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
        key = _admin_key(server.database_url)
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
        admin = {"X-Api-Key": _admin_key(server.database_url)}
        letters = http.get("/admin/dead-letters", headers=admin)
        assert letters.status_code == 200
        unknown = http.get("/admin/runs/00000000-0000-7000-8000-000000000000", headers=admin)
        assert unknown.status_code == 404
        assert unknown.headers["content-type"].startswith("application/problem+json")
