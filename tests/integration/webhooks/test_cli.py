from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from convergent.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def allow_local(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setenv("CONVERGENT_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    monkeypatch.setenv("CONVERGENT_DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "200")


def cli(*args: str) -> str:
    result = runner.invoke(app, ["webhooks", *args])
    assert result.exit_code == 0, result.output
    return result.output


def add() -> tuple[str, str]:
    out = cli("endpoints", "add", "http://127.0.0.1:9/hook", "-t", "order.*")
    endpoint = re.search(r"endpoint (\S+)", out)
    secret = re.search(r"(whsec_\S+)", out)
    assert endpoint is not None
    assert secret is not None
    return endpoint.group(1), secret.group(1)


def test_add_prints_the_secret_once_and_list_never_does() -> None:
    endpoint_id, secret = add()
    listed = cli("endpoints", "list")
    assert endpoint_id in listed
    assert "whsec_" not in listed
    assert secret.startswith("whsec_")


def test_disable_and_enable_show_in_the_list() -> None:
    endpoint_id, _ = add()
    cli("endpoints", "disable", endpoint_id)
    assert "disabled by an operator" in cli("endpoints", "list")
    cli("endpoints", "enable", endpoint_id)
    assert "yes" in cli("endpoints", "list")


def test_rotate_prints_a_new_secret() -> None:
    endpoint_id, secret = add()
    rotated = re.search(r"(whsec_\S+)", cli("endpoints", "rotate", endpoint_id))
    assert rotated is not None
    assert rotated.group(1) != secret


def test_recover_reports_how_many_messages_it_queued() -> None:
    endpoint_id, _ = add()
    assert "queued 0 message(s)" in cli("recover", endpoint_id, "--since", "2020-01-01T00:00:00")


def test_an_unknown_endpoint_is_a_one_line_error() -> None:
    result = runner.invoke(app, ["webhooks", "attempts", "not-an-id"])
    assert result.exit_code == 1
    assert "convergent webhooks endpoints list" in result.output


def test_an_unsafe_url_is_refused_with_the_fix() -> None:
    result = runner.invoke(app, ["webhooks", "endpoints", "add", "http://10.0.0.1/x"])
    assert result.exit_code == 1
    assert "CONVERGENT_WEBHOOK_ALLOW_HOSTS" in result.output
