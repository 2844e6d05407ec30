"""Schedule definitions: ticks in time zones, catch-up policies, bad input naming the fix."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from convergent.errors import ConfigurationError
from convergent.workflows import WorkflowContext, workflow
from convergent.workflows.schedules import Ticks, schedule


@workflow(name="tests.unit.sched.noop")
async def noop(ctx: WorkflowContext) -> None:
    return None


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_cron_ticks_in_their_time_zone_through_daylight_saving() -> None:
    nine_in_paris = Ticks("0 9 * * *", None, "Europe/Paris")
    assert nine_in_paris.next_after(at("2030-01-10T00:00")) == at("2030-01-10T08:00")  # CET
    assert nine_in_paris.next_after(at("2030-07-10T00:00")) == at("2030-07-10T07:00")  # CEST
    # the night the clocks go forward (31 March 2030) still has its 09:00
    assert nine_in_paris.next_after(at("2030-03-30T09:00")) == at("2030-03-31T07:00")


def test_interval_ticks_are_multiples_of_the_interval_since_the_epoch() -> None:
    hourly = Ticks(None, 3600.0)
    assert hourly.next_after(at("2030-01-01T00:30")) == at("2030-01-01T01:00")
    assert hourly.next_after(at("2030-01-01T01:00")) == at("2030-01-01T02:00")
    assert hourly.at_or_before(at("2030-01-01T01:00")) == at("2030-01-01T01:00")
    assert hourly.before(at("2030-01-01T01:00")) == at("2030-01-01T00:00")


def test_at_or_before_includes_an_exact_cron_tick() -> None:
    every5 = Ticks("*/5 * * * *", None)
    assert every5.at_or_before(at("2030-01-01T00:10")) == at("2030-01-01T00:10")
    assert every5.at_or_before(at("2030-01-01T00:14")) == at("2030-01-01T00:10")
    assert every5.before(at("2030-01-01T00:10")) == at("2030-01-01T00:05")


@pytest.mark.parametrize(
    ("policy", "now", "expected"),
    [
        ("latest", "05:30", ["05:00"]),
        ("all", "05:30", ["01:00", "02:00", "03:00", "04:00", "05:00"]),
        ("skip", "05:00:30", ["05:00"]),  # within the 60 s grace
        ("skip", "05:30", []),
    ],
)
def test_catch_up_policies_after_downtime(policy: str, now: str, expected: list[str]) -> None:
    s = schedule(noop, every=3600, catch_up=policy, name=f"unit-{policy}")
    due = s.due_ticks(at("2030-01-01T01:00"), at(f"2030-01-01T{now}"))
    assert due == [at(f"2030-01-01T{t}") for t in expected]


def test_catch_up_all_is_bounded() -> None:
    s = schedule(noop, every=60, catch_up="all", max_catch_up=3, name="unit-bounded")
    due = s.due_ticks(at("2030-01-01T00:00"), at("2030-01-02T00:00"))
    assert due == [at("2030-01-01T23:58"), at("2030-01-01T23:59"), at("2030-01-02T00:00")]


def test_a_cron_expression_that_does_not_parse_names_the_fix() -> None:
    with pytest.raises(ConfigurationError, match="does not parse") as err:
        schedule(noop, cron="61 * * * *", name="unit-bad")
    assert "'*/5 * * * *'" in err.value.message
    with pytest.raises(ConfigurationError, match="five fields"):
        schedule(noop, cron="every day", name="unit-bad")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "exactly one of cron"),
        ({"cron": "* * * * *", "every": 60}, "exactly one of cron"),
        ({"every": 0}, "positive"),
        ({"every": 60, "timezone": "Mars/Olympus"}, "IANA name"),
        ({"every": 60, "catch_up": "some"}, "skip, latest, all"),
    ],
)
def test_bad_definitions_name_the_fix(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        schedule(noop, name="unit-bad", **options)  # type: ignore[arg-type]
