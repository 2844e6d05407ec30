"""Every ``CONVERGENT_*`` environment variable, in one pydantic-settings model.

Flags and arguments override the environment; the environment overrides the defaults. A value
that does not parse is a `ConfigurationError` naming the variable. docs/configuration.md is
generated from these models (`markdown_table`) and checked against them by a test;
`convergent config` shows the effective values, where each came from, secrets masked.
Packages built on convergent add their own model with `register` (the shop does).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from convergent.errors import ConfigurationError

__all__ = [
    "DEFAULT_BROKER_URL",
    "DEFAULT_DATABASE_URL",
    "ENV_PREFIX",
    "MODELS",
    "CommaList",
    "Effective",
    "Settings",
    "broker_url",
    "database_url",
    "effective",
    "env_name",
    "load",
    "load_model",
    "markdown_table",
    "mask",
    "otel_environment",
    "raw",
    "register",
    "split_commas",
]

ENV_PREFIX = "CONVERGENT_"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./convergent.db"
DEFAULT_BROKER_URL = "embedded://"

CommaList = Annotated[list[str], NoDecode]


def split_commas(value: Any) -> Any:
    """``a, b,c`` -> ``["a", "b", "c"]`` (environment variables hold no JSON lists)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """The toolkit's settings."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="Database: `sqlite+aiosqlite:///path` or `postgresql+asyncpg://user@host/db` "
        "(`--database-url`).",
    )
    broker_url: str = Field(
        DEFAULT_BROKER_URL,
        description="Broker: `embedded://`, `nats://host:4222` or `kafka://host:9092` "
        "(`--broker-url`).",
    )
    broker_prefix: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_-]*$",
        description="Prefix of every stream, subject and Kafka topic on the broker, per "
        "environment (`staging`), so deployments sharing a broker never share topics "
        "(`?prefix=` in the URL wins).",
    )
    broker_tls_ca: str = Field(
        "", description="CA bundle (PEM path) to verify the broker's TLS certificate; turns TLS on."
    )
    broker_tls_cert: str = Field(
        "", description="Client certificate (PEM path) for brokers that require mutual TLS."
    )
    broker_tls_key: str = Field("", description="The client certificate's private key (PEM path).")
    broker_credentials: str = Field(
        "", description="NATS credentials file (`.creds`: user JWT and NKey seed)."
    )
    nats_fast_path: bool = Field(
        True,
        description="Publish to NATS by framing batches into one socket write (tested on the "
        "pinned nats-py range); `0` sends every message through nats-py's own `publish`.",
    )
    broker_username: str = Field(
        "", description="Kafka SASL user name (or NATS user; `user:password@` in the URL wins)."
    )
    broker_password: SecretStr = Field(
        SecretStr(""), description="Password of `CONVERGENT_BROKER_USERNAME`."
    )
    sqlite_inline: bool = Field(
        True,
        description="Run SQLite statements on the event loop's thread (microseconds each) "
        "instead of aiosqlite's worker thread; 0 goes back to the thread.",
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto",
        description="The event loop of every process the CLI starts: `auto` is uvloop where "
        "installed (the `fast` extra), else asyncio's; `asyncio` keeps asyncio's own.",
    )
    gc_tuning: bool = Field(
        True,
        description="In the processes the CLI starts, freeze what start-up made out of the cycle "
        "collector's way and collect young objects less often (thresholds 20000/50/100): "
        "shorter pauses, a lower p99. 0 keeps Python's own.",
    )
    db_pool_size: int = Field(
        5, ge=1, description="PostgreSQL connections each `Store` keeps open (`pool_size=`)."
    )
    db_max_overflow: int = Field(
        10, ge=0, description="Extra PostgreSQL connections under load (`max_overflow=`)."
    )
    db_connect_timeout: float = Field(
        4.0, gt=0, description="Seconds to open a PostgreSQL connection before answering 503."
    )
    db_statement_timeout: float = Field(
        2.5,
        gt=0,
        description="Seconds a PostgreSQL statement may take; then its connection is dropped "
        "(about 2 s more) and the request answers 503. Migrations wait as long as they need.",
    )
    db_pool_timeout: float = Field(
        4.0, gt=0, description="Seconds a request waits for a free pooled connection (503 after)."
    )
    idempotency_lock_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds an Idempotency-Key stays locked by a request that died mid-way "
        "(a running request renews its lock every third of this).",
    )
    idempotency_retention: float = Field(
        86400.0, gt=0, description="Seconds a completed Idempotency-Key is replayed, then purged."
    )
    http_max_body: int = Field(
        1 << 20, ge=1, description="Bytes a request body may have on any route (413 beyond)."
    )
    http_max_json_depth: int = Field(
        32, ge=1, description="Levels a request's JSON may nest (422 beyond)."
    )
    webhook_allow_hosts: CommaList = Field(
        default_factory=list,
        description="Comma-separated hosts and networks (CIDR) webhooks may reach although not "
        "public, e.g. `localhost,10.0.0.0/8`.",
    )
    api_key_pepper: SecretStr = Field(
        SecretStr(""),
        description="Secret mixed into every API key's stored hash; keep it outside the "
        "database. Changing it invalidates the keys issued before.",
    )
    api_key_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="Seconds a verified API key is remembered: a revoke takes effect within this.",
    )
    console_refresh_seconds: float = Field(
        5.0, gt=0, description="Seconds between live updates of the console's Overview."
    )
    log_format: Literal["kv", "json"] = Field(
        "kv",
        description="Log lines of long-running commands: `kv` (key=value) or `json` "
        "(`--log-format`).",
    )
    log_level: str = Field("INFO", description="Lowest level logged: DEBUG, INFO, WARNING, ...")
    maintenance_interval: float = Field(
        60.0, gt=0, description="Seconds between maintenance rounds (retention, compaction)."
    )
    maintenance_batch_size: int = Field(
        500,
        ge=1,
        description="Rows per delete of the maintenance loop: short transactions, no long lock.",
    )
    inbox_retention: float = Field(
        604800.0,
        gt=0,
        description="Seconds a consumer's inbox record is kept (dedupes redeliveries; keep it "
        "longer than any redelivery or republish).",
    )
    reply_retention: float = Field(
        86400.0, gt=0, description="Seconds a stored reply to a request is kept."
    )
    run_retention: float = Field(
        2592000.0,
        gt=0,
        description="Seconds a finished workflow run (completed, failed, cancelled) is kept, "
        "with its checkpoints and events.",
    )
    webhook_retention: float = Field(
        2592000.0,
        gt=0,
        description="Seconds finished webhook deliveries, their attempts, messages and "
        "events are kept.",
    )
    log_retention: float = Field(
        604800.0,
        gt=0,
        description="Seconds an entry of an event topic stays on the embedded log; a consumer "
        "group further behind skips ahead.",
    )
    log_retention_topics: CommaList = Field(
        default_factory=list,
        description="Per-topic embedded-log retention, `topic=seconds` comma-separated "
        "(e.g. `clicks=3600`).",
    )
    compaction_lag: float = Field(
        60.0,
        ge=0,
        description="Seconds before a superseded entry of an entity topic on the embedded log "
        "is compacted away (the latest per key always stays).",
    )
    tombstone_retention: float = Field(
        86400.0,
        ge=0,
        description="Seconds a tombstone (an entity's delete) stays on the embedded log after "
        "compaction, so consumers still see the delete.",
    )
    faults: str = Field(
        "",
        description="Fault points to crash at, `name` or `name@N` comma-separated "
        "(tests and drills only; docs/faults.md).",
    )

    @field_validator("webhook_allow_hosts", "log_retention_topics", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        return split_commas(value)


#: every registered model and the section `convergent config` shows it under
MODELS: dict[str, type[BaseSettings]] = {"convergent": Settings}


def register(section: str, model: type[BaseSettings]) -> None:
    """Show a package's own ``CONVERGENT_*`` model in `convergent config` and its checks."""
    MODELS[section] = model


def env_name(model: type[BaseSettings], field: str) -> str:
    prefix = str(model.model_config.get("env_prefix") or "")
    return (prefix + field).upper()


#: per model: the variables it was read from, and the result
_cache: dict[type[BaseSettings], tuple[tuple[tuple[str, str], ...], Any]] = {}


def _environment(model: type[BaseSettings]) -> tuple[tuple[str, str], ...]:
    prefix = str(model.model_config.get("env_prefix") or "").upper()
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(prefix)))


def load_model(model: type[BaseSettings], /, **overrides: Any) -> Any:
    """``model`` from the environment; keyword arguments (None: unset) win.

    Without arguments the result is reused until the model's variables change (validation
    costs about 0.4 ms; a webhook delivery asks for its allow-list every time)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    environment = _environment(model)
    cached = _cache.get(model)
    if not given and cached is not None and cached[0] == environment:
        return cached[1]
    try:
        value = model(**given)
        if not given:
            _cache[model] = (environment, value)
        return value
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            field = str(error["loc"][0]) if error["loc"] else "?"
            source = f"--{field.replace('_', '-')}" if field in given else env_name(model, field)
            problems.append(f"{source}={error.get('input')!r}: {error['msg']}")
        raise ConfigurationError("bad setting " + "; ".join(problems)) from None


def load(**overrides: Any) -> Settings:
    """The toolkit's settings from the environment; keyword arguments (None: unset) win."""
    return load_model(Settings, **overrides)  # type: ignore[no-any-return]


def database_url(override: str | None = None) -> str:
    return override or load().database_url


def broker_url(override: str | None = None) -> str:
    return override or load().broker_url


def otel_environment() -> dict[str, str]:
    """The standard ``OTEL_*`` variables as set (OpenTelemetry's own, not ours: the SDK and its
    exporter read them; `convergent.telemetry.tracing` asks which exporter is wanted)."""
    return {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}


def raw(field: str) -> str | None:
    """One variable as set, unparsed: for what is read at import time, before a bad unrelated
    setting could be reported properly (fault points)."""
    return os.environ.get(env_name(Settings, field))


# showing them ----------------------------------------------------------------------------------

_SECRET_WORDS = ("password", "secret", "token", "key")


def _is_secret(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_WORDS)


def mask(value: Any) -> str:
    """A value fit to print: secrets starred, passwords in URLs and secret query values too."""
    if isinstance(value, SecretStr):
        return "********" if value.get_secret_value() else ""
    if isinstance(value, list):
        return ",".join(mask(v) for v in value)
    text = "" if value is None else str(value)
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
        netloc = parts.netloc
        if parts.password:
            netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if netloc == parts.netloc and not any(_is_secret(k) for k, _ in pairs):
            return text  # untouched (urlunsplit would rewrite sqlite:///./x.db)
        query = urlencode([(k, "***" if _is_secret(k) else v) for k, v in pairs], safe="*")
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return text


@dataclass(frozen=True)
class Effective:
    section: str
    variable: str
    value: str  # masked
    source: str  # flag, env or default
    description: str


def effective(overrides: Mapping[str, Any] | None = None) -> list[Effective]:
    """Each registered setting's value (masked) and where it came from."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    rows = []
    for section, model in MODELS.items():
        values = load_model(
            model, **{k: v for k, v in overrides.items() if k in model.model_fields}
        )
        for field, info in model.model_fields.items():
            variable = env_name(model, field)
            source = (
                "flag" if field in overrides else "env" if variable in os.environ else "default"
            )
            value = getattr(values, field)
            value = "********" if value and _is_secret(field) else mask(value)
            rows.append(Effective(section, variable, value, source, info.description or ""))
    return rows


def _default(info: Any) -> str:
    value = info.get_default(call_default_factory=True)
    shown = mask(value)
    return f"`{shown}`" if shown else "(empty)"


def markdown_table(model: type[BaseSettings]) -> str:
    """The model as a Markdown table: variable, default, meaning (docs/configuration.md)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for field, info in model.model_fields.items():
        desc = (info.description or "").replace("|", "\\|")
        lines.append(f"| `{env_name(model, field)}` | {_default(info)} | {desc} |")
    return "\n".join(lines) + "\n"
