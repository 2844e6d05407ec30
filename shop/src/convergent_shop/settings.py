"""The shop's own ``CONVERGENT_*`` variables, registered beside the toolkit's (`convergent config`,
docs/configuration.md)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from convergent import settings
from convergent.settings import CommaList, split_commas

__all__ = ["ShopSettings", "load"]


class ShopSettings(BaseSettings):
    """The reference shop's settings."""

    model_config = SettingsConfigDict(env_prefix=settings.ENV_PREFIX, extra="ignore")

    psp_url: str = Field(
        "http://127.0.0.1:8100",
        description="Where the shop's workflows reach the payment provider.",
    )
    psp_database_url: str = Field(
        "sqlite+aiosqlite:///./psp.db",
        description="The fake provider's own ledger (`convergent psp --database-url`).",
    )
    shop_loops: bool = Field(
        True,
        description="`convergent serve` runs the background loops in its own process "
        "(`--loops/--no-loops`).",
    )
    webhook_dispatcher: bool = Field(
        True, description="`convergent serve` also delivers webhooks (0: a worker does)."
    )
    metrics_admin_only: bool = Field(
        False, description="`GET /metrics` needs an admin API key (else it is open to scrapers)."
    )
    notifications_secrets: CommaList = Field(
        default_factory=list,
        description="Comma-separated `whsec_…` secrets the sample webhook receiver verifies with.",
    )

    @field_validator("notifications_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: Any) -> Any:
        return split_commas(value)


def load(**overrides: Any) -> ShopSettings:
    return settings.load_model(ShopSettings, **overrides)  # type: ignore[no-any-return]


settings.register("shop", ShopSettings)
