"""One pydantic-settings model for every CONVERGENT_* variable, documented from the model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import convergent_shop.settings as shop_settings
from convergent import settings
from convergent.cli import app
from convergent.errors import ConfigurationError
from convergent.idempotency import IdempotencyKeys
from convergent.store import Store
from convergent.webhooks.safety import AllowList

ROOT = Path(__file__).resolve().parents[2]
VARIABLE = re.compile(r"CONVERGENT_[A-Z][A-Z_]*[A-Z]")


def _registered() -> set[str]:
    return {
        settings.env_name(model, field)
        for model in settings.MODELS.values()
        for field in model.model_fields
    }


def test_every_variable_the_code_names_is_a_setting() -> None:
    named = {
        name
        for folder in ("src", "shop/src")
        for path in (ROOT / folder).rglob("*.py")
        for name in VARIABLE.findall(path.read_text())
    }
    assert named, "the scan found nothing: the pattern is broken"
    assert named - _registered() == set()


def test_the_toolkit_reads_the_environment_only_through_the_model() -> None:
    ad_hoc = re.compile(r"os\.environ\.get\(|os\.getenv\(|os\.environ\[[^\]]+\](?!\s*=)")
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "src" / "convergent").rglob("*.py")
        if path.name != "settings.py" and ad_hoc.search(path.read_text())
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("section", "model"),
    [("convergent", settings.Settings), ("shop", shop_settings.ShopSettings)],
)
def test_docs_configuration_table_is_the_model(section: str, model: type) -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    found = re.search(rf"<!-- settings:{section} -->\n(.*?)<!-- /settings -->", doc, re.DOTALL)
    assert found, f"docs/configuration.md has no settings:{section} table"
    assert found.group(1) == settings.markdown_table(model), (
        "docs/configuration.md is out of date; paste convergent.settings.markdown_table(...)"
    )


def test_environment_overrides_defaults_and_arguments_override_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert settings.load().db_pool_size == 5
    monkeypatch.setenv("CONVERGENT_DB_POOL_SIZE", "12")
    assert settings.load().db_pool_size == 12
    assert settings.load(db_pool_size=3).db_pool_size == 3
    assert settings.load(db_pool_size=None).db_pool_size == 12  # None: not given


def test_the_store_and_the_engines_take_their_defaults_from_the_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    monkeypatch.setenv("CONVERGENT_DATABASE_URL", url)
    monkeypatch.setenv("CONVERGENT_IDEMPOTENCY_RETENTION", "90")
    monkeypatch.setenv("CONVERGENT_WEBHOOK_ALLOW_HOSTS", "localhost, 10.0.0.0/8")
    store = Store()
    assert store.url.database == str(tmp_path / "x.db")
    assert IdempotencyKeys(store).retention.total_seconds() == 90
    assert IdempotencyKeys(store, retention=5).retention.total_seconds() == 5
    allow = AllowList.from_env()
    assert allow.allows_host("localhost")
    assert [str(n) for n in allow.networks] == ["10.0.0.0/8"]


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERGENT_DB_POOL_SIZE", "lots")
    with pytest.raises(ConfigurationError, match="CONVERGENT_DB_POOL_SIZE='lots'"):
        settings.load()


def test_mask_hides_passwords_and_secret_query_values_only() -> None:
    assert settings.mask("postgresql://app:s3cret@db/app") == "postgresql://app:***@db/app"
    masked = settings.mask("kafka://h:9092?sasl_plain_password=pw&acks=all")
    assert "pw" not in masked
    assert "acks=all" in masked
    assert settings.mask("sqlite+aiosqlite:///./x.db") == "sqlite+aiosqlite:///./x.db"


def test_convergent_config_shows_values_sources_and_masks_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVERGENT_DATABASE_URL", "postgresql://app:s3cret@db/app")
    monkeypatch.setenv("CONVERGENT_NOTIFICATIONS_SECRETS", "whsec_abc")
    out = CliRunner().invoke(app, ["config", "--json", "--broker-url", "nats://n:4222"])
    assert out.exit_code == 0, out.output
    assert "s3cret" not in out.output
    assert "whsec_abc" not in out.output
    rows = {r["variable"]: r for r in json.loads(out.output)}
    assert rows.keys() == _registered()
    assert rows["CONVERGENT_DATABASE_URL"] == {
        **rows["CONVERGENT_DATABASE_URL"],
        "value": "postgresql://app:***@db/app",
        "source": "env",
    }
    assert rows["CONVERGENT_BROKER_URL"]["source"] == "flag"
    assert rows["CONVERGENT_DB_POOL_SIZE"]["source"] == "default"
    assert rows["CONVERGENT_NOTIFICATIONS_SECRETS"]["value"] == "********"


def test_convergent_config_with_a_bad_value_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERGENT_SHOP_LOOPS", "perhaps")
    out = CliRunner().invoke(app, ["config"])
    assert out.exit_code == 1
    assert out.output.startswith("error: bad setting CONVERGENT_SHOP_LOOPS='perhaps'")
    assert len(out.output.strip().splitlines()) == 1
