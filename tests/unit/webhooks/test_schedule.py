from __future__ import annotations

import pytest

from convergent.retry import parse_retry_after
from convergent.webhooks import DEFAULT_SCHEDULE, WebhookSettings


def test_the_default_schedule_is_the_standard_one() -> None:
    assert DEFAULT_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert WebhookSettings().max_attempts == 8


def test_the_delay_after_each_failure_follows_the_schedule() -> None:
    cfg = WebhookSettings(jitter=0)
    assert [cfg.delay_after(n) for n in range(1, 9)] == [
        5,
        300,
        1800,
        7200,
        18000,
        36000,
        36000,
        None,
    ]


def test_jitter_stays_within_its_fraction() -> None:
    cfg = WebhookSettings(jitter=0.1)
    delays = [cfg.delay_after(2) for _ in range(200)]
    assert all(d is not None and 270 <= d <= 330 for d in delays)
    assert len(set(delays)) > 1


def test_retry_after_is_a_lower_bound_with_a_ceiling() -> None:
    cfg = WebhookSettings(jitter=0, max_retry_after=600)
    assert cfg.delay_after(1, retry_after=60) == 60
    assert cfg.delay_after(2, retry_after=60) == 300
    assert cfg.delay_after(1, retry_after=10**6) == 600


@pytest.mark.parametrize(
    ("header", "seconds"), [("120", 120.0), (None, None), ("soon", None), ("", None)]
)
def test_retry_after_header_values(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_as_a_past_http_date_means_now() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
