from __future__ import annotations

import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from convergent import errors, faults, retry
from convergent.clock import ManualClock
from convergent.ids import uuid7, uuid7_time
from convergent.retry import RetryPolicy
from convergent.store.engine import normalise_url


def test_uuid7_has_version_7_and_rfc_variant() -> None:
    value = uuid7()
    assert value.version == 7
    assert value.variant == "specified in RFC 4122"


def test_uuid7_values_strictly_increase_even_many_per_millisecond() -> None:
    ids = [uuid7() for _ in range(20000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_uuid7_encodes_its_time() -> None:
    import time

    assert uuid7_time(uuid7()) == pytest.approx(time.time(), abs=1.0)


def test_full_jitter_stays_within_the_exponential_cap() -> None:
    policy = RetryPolicy(initial_delay=1, multiplier=2, max_delay=10)
    rng = random.Random(1)
    for attempt, cap in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (9, 10)]:
        delays = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8  # spread over the whole range, not a fixed value


def test_policy_is_exhausted_after_max_attempts_and_past_its_deadline() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    policy = RetryPolicy(max_attempts=3, initial_delay=10, jitter=False, deadline=15)
    assert policy.next_attempt_at(1, now, first_attempt_at=now) == now + timedelta(seconds=10)
    assert policy.next_attempt_at(2, now, first_attempt_at=now) is None  # 20 s > deadline 15 s
    assert RetryPolicy(max_attempts=3).next_attempt_at(3, now) is None


def test_retry_after_is_a_lower_bound() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    policy = RetryPolicy(initial_delay=1, jitter=False)
    assert policy.next_attempt_at(1, now, retry_after=30) == now + timedelta(seconds=30)


def test_testing_switch_removes_delays() -> None:
    with retry.zero_delays():
        assert RetryPolicy(initial_delay=100, jitter=False).backoff(5) == 0.0
    assert RetryPolicy(initial_delay=30, jitter=False).backoff(1) == 30


async def test_manual_clock_wakes_sleepers_when_advanced() -> None:
    import asyncio

    clock = ManualClock()
    sleeper = asyncio.create_task(clock.sleep(60))
    await asyncio.sleep(0)
    clock.advance(59)
    await asyncio.sleep(0.01)
    assert not sleeper.done()
    clock.advance(1)
    await asyncio.wait_for(sleeper, 1)


def test_fault_points_are_inert_unless_armed() -> None:
    faults.configure(None)
    faults.fault_point("test.anything")  # returns: nothing armed


def test_armed_fault_point_kills_the_process_on_the_nth_hit() -> None:
    code = (
        "from convergent.faults import fault_point\n"
        "for i in range(5):\n"
        "    print(i, flush=True)\n"
        "    fault_point('test.point')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"CONVERGENT_FAULTS": "test.point@3", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == -9
    assert proc.stdout.split() == ["0", "1", "2"]


def test_error_tree_classifies_transport_errors_as_transient() -> None:
    assert issubclass(errors.TransportError, errors.TransientError)
    assert issubclass(errors.RunCancelled, errors.RunFailed)
    assert errors.IdempotencyKeyInProgress(retry_after=3).retry_after == 3


@pytest.mark.parametrize(
    ("raw", "driver"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("postgres://u@h/db", "postgresql+asyncpg"),
        ("postgresql://u@h/db", "postgresql+asyncpg"),
    ],
)
def test_database_urls_pick_our_async_drivers(raw: str, driver: str) -> None:
    assert normalise_url(raw).drivername == driver


def test_unsupported_database_url_says_what_is_supported() -> None:
    with pytest.raises(errors.ConfigurationError, match=r"SQLite .* and PostgreSQL"):
        normalise_url("mysql://root@localhost/db")
