"""`convergent demo` and `convergent drill` (which starts `convergent psp`) end to end, short."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from convergent.cli import app


def test_demo_converges_holds_every_invariant_and_writes_its_report(tmp_path: Path) -> None:
    args = ["demo", "--duration", "5", "--orders", "8", "--bookings", "1", "--customers", "1"]
    args += ["--trades", "3"]
    args += ["--settle-timeout", "60", "--no-live", "--port", "0", "--report-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output  # strict: any violated invariant exits 1
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] is True
    assert report["workload"]["accepted_orders"] == 8
    assert {c["name"] for c in report["checks"]} >= {"orders_terminal", "no_double_charge"}
    assert "<svg" in (tmp_path / "report.html").read_text()
    slowest = report["runs_to_look_at"][0]  # all final: the slowest order first, with its run
    assert slowest["state"] in {"completed", "cancelled", "failed"}
    assert slowest["seconds"] == max(r["seconds"] for r in report["runs_to_look_at"])
    assert f'/console/runs/{slowest["run"]}"' in (tmp_path / "report.html").read_text()
    assert (tmp_path / "demo.log").exists()  # the shop's log lines, kept off the console
    assert "WARNING" not in result.output


def test_strict_demo_exits_non_zero_while_orders_cannot_complete(tmp_path: Path) -> None:
    args = ["demo", "--duration", "5", "--orders", "2", "--bookings", "0", "--customers", "0"]
    args += ["--trades", "0"]
    args += ["--settle-timeout", "0.2", "--no-live", "--port", "0", "--strict"]
    result = CliRunner().invoke(app, [*args, "--report-dir", str(tmp_path)])
    report = json.loads((tmp_path / "report.json").read_text())
    assert (result.exit_code != 0) == (not report["ok"])


def test_drill_runs_shop_and_provider_processes_and_checks_invariants(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "convergent", "drill", "--orders", "4", "--bookings", "1"]
    # long enough that a loaded machine still places all 4 orders before the load stops
    args += ["--duration", "8", "--settle-timeout", "0.5", "--kills", "0", "--no-live"]
    args += ["--trades", "2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERGENT_")}
    done = subprocess.run(
        [*args, "--report-dir", str(tmp_path)], env=env, capture_output=True, timeout=120
    )
    report = json.loads((tmp_path / "report.json").read_text())
    workload = report["rounds"][0]["workload"]
    assert workload["accepted_orders"] == 4
    assert workload["trades_placed"] == 2  # `convergent psp` serves the exchange too
    assert (done.returncode != 0) == (not report["ok"])
    assert (tmp_path / "no-crash-point" / "serve.log").exists()


def test_drill_refuses_an_unknown_crash_point_and_names_the_known_ones(tmp_path: Path) -> None:
    args = ["drill", "--crash-points", "no.such.point", "--report-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "unknown fault points" in result.output
    assert not (tmp_path / "report.json").exists()


def _drill(tmp_path: Path, *extra: str, timeout: float = 300) -> dict[str, object]:
    args = [sys.executable, "-m", "convergent", "drill", "--no-live", "--seed", "7"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERGENT_")}
    done = subprocess.run(
        [*args, *extra, "--report-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        timeout=timeout,
    )
    written = tmp_path / "report.json"
    assert written.exists(), (done.stdout + done.stderr).decode()[-3000:]  # it did not run
    report: dict[str, object] = json.loads(written.read_text())
    assert done.returncode == 0, (report["failed"], done.stdout.decode()[-3000:])
    assert report["ok"] is True
    return report


def _postmaster_of(pid_file: Path) -> int:
    return int(pid_file.read_text().split()[0])


def _shared_nats_servers() -> set[int]:
    """The nats-server on the shared port 4222 (other tests start their own on other ports)."""
    found = subprocess.run(["pgrep", "-x", "nats-server"], capture_output=True, text=True)
    shared = set()
    for pid in found.stdout.split():
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"4222" in argv or any(a.endswith(b":4222") for a in argv):
                shared.add(int(pid))
    return shared


def test_drill_restarts_and_stops_servers_of_its_own_never_the_shared_ones(
    tmp_path: Path,
) -> None:
    """`--pg-restart` and `--broker-outage` act on a PostgreSQL and a nats-server the drill
    started: the machine's own keep running (same processes), and nothing of the drill's is left."""
    shared_pg = next(Path("/var/run/postgresql").glob("*.pid"), None)
    postmaster = _postmaster_of(shared_pg) if shared_pg else None
    nats_before = _shared_nats_servers()
    leftovers = set(Path(tempfile.gettempdir()).glob("convergent-drill-*"))
    report = _drill(
        tmp_path,
        *("--pg-restart", "--broker-outage", "2", "--orders", "20", "--bookings", "2"),
        *("--trades", "2", "--kills", "1", "--duration", "12", "--settle-timeout", "120"),
    )
    events = report["events"]
    assert isinstance(events, list)
    assert "PostgreSQL restart (fast shutdown, start)" in events
    assert {"broker down for 2.0s", "broker back"} <= set(events)
    settings = report["settings"]
    assert isinstance(settings, dict)
    assert ":5432/" not in settings["database_url"]  # a port of its own, not the shared server
    assert settings["broker_url"] != "nats://127.0.0.1:4222"
    workload = report["workload"]
    assert isinstance(workload, dict)
    assert "500" not in workload["statuses"]
    if shared_pg is not None:
        assert _postmaster_of(shared_pg) == postmaster
    assert nats_before == _shared_nats_servers()  # the shared nats-server was never stopped
    assert set(Path(tempfile.gettempdir()).glob("convergent-drill-*")) == leftovers
    assert "database system is shut down" in (tmp_path / "postgres.log").read_text()


def test_drill_will_not_restart_a_postgresql_or_stop_a_broker_it_did_not_start(
    tmp_path: Path,
) -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    for args, flag in (
        (["--pg-restart", "--database-url", url], "--database-url"),
        (["--broker-outage", "5", "--broker-url", "nats://127.0.0.1:4222"], "--broker-url"),
    ):
        result = CliRunner().invoke(app, ["drill", *args, "--report-dir", str(tmp_path)])
        assert result.exit_code == 1
        assert f"drop {flag}" in result.output
        assert "Traceback" not in result.output
        assert not (tmp_path / "report.json").exists()


def test_drill_on_kafka_with_kills_holds_every_invariant(tmp_path: Path, kafka_url: str) -> None:
    report = _drill(
        tmp_path,
        *("--broker-url", kafka_url, "--orders", "30", "--bookings", "3", "--trades", "2"),
        *("--kills", "2", "--fault-rate", "0.2", "--duration", "20", "--settle-timeout", "120"),
    )
    rounds = report["rounds"]
    assert isinstance(rounds, list)
    assert sum(rounds[0]["restarts"].values()) >= 2  # the kills happened and were survived


def test_drill_killing_the_api_between_commit_and_answer_loses_nothing(tmp_path: Path) -> None:
    """The API dies at a crash point on its first request that reaches it; clients retry."""
    report = _drill(
        tmp_path,
        *("--crash-points", "idempotency.after_commit_before_response", "--orders", "20"),
        *("--bookings", "2", "--trades", "0", "--kills", "0", "--duration", "20"),
        "--settle-timeout",
        "120",
    )
    rounds = report["rounds"]
    assert isinstance(rounds, list)
    assert rounds[0]["restarts"]["serve"] >= 1


def test_sigterm_stops_the_drill_and_every_process_it_started(tmp_path: Path) -> None:
    import psutil

    args = [sys.executable, "-m", "convergent", "drill", "--no-live", "--orders", "50"]
    args += ["--duration", "60", "--kills", "0", "--report-dir", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERGENT_")}
    drill = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    parent = psutil.Process(drill.pid)
    deadline = time.monotonic() + 60
    started: list[psutil.Process] = []
    while len(started) < 5:  # psp, serve, two workers, relay
        assert time.monotonic() < deadline, "the drill did not start its processes"
        assert drill.poll() is None, drill.stdout.read() if drill.stdout else ""
        started = parent.children(recursive=True)
        time.sleep(0.2)
    drill.terminate()
    output, _ = drill.communicate(timeout=60)
    assert drill.returncode == 1
    assert b"stopped by SIGTERM" in output
    _gone, alive = psutil.wait_procs(started, timeout=20)
    assert not alive, [p.cmdline() for p in alive]


def test_demo_keep_serving_prints_the_console_and_a_key_that_opens_it(tmp_path: Path) -> None:
    args = ["demo", "--duration", "3", "--orders", "3", "--bookings", "0", "--customers", "0"]
    args += ["--trades", "0", "--no-live", "--port", "0", "--report-dir", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "convergent", *args, "--keep-serving"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    try:
        assert proc.stdout is not None
        found = None
        for line in proc.stdout:  # ends only if the demo exits early
            found = re.search(r"console: (\S+/console) \(admin key, shown once: (\S+)\)", line)
            if found or "serving until Ctrl-C" in line:
                break
        assert found, "the demo printed no console line"
        url, key = found.groups()
        page = httpx.get(f"{url}/runs", headers={"X-Api-Key": key}, timeout=10)
        assert page.status_code == 200
        assert "<html" in page.text.lower()
        assert httpx.get(f"{url}/runs", headers={"X-Api-Key": "cvk_x_y"}).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
