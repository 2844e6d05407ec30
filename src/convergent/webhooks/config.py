"""Settings of webhook delivery, with the defaults of the Standard Webhooks guidance."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta

from convergent.webhooks.safety import AllowList

__all__ = ["DEFAULT_SCHEDULE", "WebhookSettings"]

#: seconds before each attempt, counted from the previous failure (the first goes at once)
DEFAULT_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


@dataclass(frozen=True)
class WebhookSettings:
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.1  # each delay is scaled by a random factor in [1 - jitter, 1 + jitter]
    timeout: float = 15.0
    disable_after: timedelta = timedelta(days=5)  # of continuous failure
    rotation_grace: timedelta = timedelta(hours=24)
    max_retry_after: float = 86400.0  # a server cannot push a retry further than this
    per_endpoint_concurrency: int = 8
    max_in_flight: int = 256
    batch_size: int = 100
    poll_interval: float = 1.0
    snippet_bytes: int = 1024
    allow: AllowList = field(default_factory=AllowList.from_env)

    def __post_init__(self) -> None:
        if not self.schedule:
            raise ValueError("the retry schedule needs at least one entry")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    @property
    def max_attempts(self) -> int:
        return len(self.schedule)

    def delay_after(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait after failed attempt ``attempt`` (from 1); None once exhausted."""
        if attempt >= len(self.schedule):
            return None
        delay = self.schedule[attempt] * random.uniform(1 - self.jitter, 1 + self.jitter)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay
