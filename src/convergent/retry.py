"""Retry policies: exponential backoff with full jitter, an attempt limit and an overall deadline.

The engines persist the time of the next attempt computed here, so a restart never resets it.
`zero_delays()` turns every delay into zero for fast, deterministic tests.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

__all__ = ["RetryPolicy", "parse_retry_after", "zero_delays"]

_testing = False


@contextmanager
def zero_delays(enabled: bool = True) -> Iterator[None]:
    """Within the block, every policy waits zero seconds between attempts."""
    global _testing
    before, _testing = _testing, enabled
    try:
        yield
    finally:
        _testing = before


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how far apart to try again.

    ``attempt`` counts from 1 (the first try). After attempt ``n`` fails the next one waits a
    random time in ``[0, min(max_delay, initial_delay * multiplier ** (n - 1))]`` (full jitter);
    with ``jitter=False`` it waits the upper bound.
    """

    max_attempts: int = 5
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: bool = True
    deadline: float | None = None  # seconds from the first attempt; None means no limit

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt``."""
        if _testing:
            return 0.0
        cap = min(self.max_delay, self.initial_delay * self.multiplier ** max(0, attempt - 1))
        if not self.jitter:
            return cap
        return (rng or random).uniform(0.0, cap)

    def next_attempt_at(
        self,
        attempt: int,
        now: datetime,
        *,
        first_attempt_at: datetime | None = None,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """When to try again after ``attempt`` failed, or None when the policy is exhausted.

        A server's ``Retry-After`` is honoured as a lower bound.
        """
        if attempt >= self.max_attempts:
            return None
        delay = self.backoff(attempt, rng)
        if retry_after is not None and not _testing:
            delay = max(delay, retry_after)
        when = now + timedelta(seconds=delay)
        limit = self.deadline
        past_deadline = (
            limit is not None
            and first_attempt_at is not None
            and when > first_attempt_at + timedelta(seconds=limit)
        )
        if past_deadline:
            return None
        return when


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None if absent
    or unreadable. A date is measured from ``now`` (an injected clock's, in tests)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
