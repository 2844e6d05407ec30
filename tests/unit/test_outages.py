"""Outages are logged as a person reads them: down once, paced reminders, back once."""

from __future__ import annotations

import io
import json
import logging

import pytest

from convergent.errors import StoreUnavailable
from convergent.outages import Outage, is_transient
from convergent.telemetry.logging import JsonFormatter, KeyValueFormatter, RepeatFilter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_one_line_down_paced_reminders_and_one_line_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    outage = Outage("NATS", logging.getLogger("test.outage"), every=10.0, clock=clock)
    with caplog.at_level(logging.INFO, "test.outage"):
        for second in range(25):  # a failure every second for 25 s
            clock.now = float(second)
            outage.down(ConnectionRefusedError(111, "refused"))
        clock.now = 30.0
        outage.up()
        outage.up()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "NATS unreachable: ConnectionRefusedError: [Errno 111] refused"
    assert lines[1].startswith("NATS still unreachable after 10s (11 failures)")
    assert lines[2].startswith("NATS still unreachable after 20s (21 failures)")
    assert lines[3] == "NATS is back after 30s"
    assert len(lines) == 4


def test_connection_failures_are_transient_and_bugs_are_not() -> None:
    wrapped = StoreUnavailable("db away")
    wrapped.__cause__ = OSError("connection refused")
    assert is_transient(ConnectionRefusedError())
    assert is_transient(TimeoutError())
    assert is_transient(wrapped)
    assert not is_transient(ValueError("a bug"))
    assert not is_transient(KeyError("x"))


def _record(exc: BaseException | None = None, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "convergent.test", logging.WARNING, __file__, 1, "x %s", ("y",), None
    )
    if exc is not None:
        try:
            raise exc
        except BaseException as caught:
            record.exc_info = (type(caught), caught, caught.__traceback__)
    record.__dict__.update(extra)
    return record


def test_key_value_lines_carry_the_extra_fields_and_no_traceback_for_an_outage() -> None:
    line = KeyValueFormatter().format(_record(ConnectionRefusedError(111, "refused"), run_id="r1"))
    assert 'level=warning logger=convergent.test msg="x y" run_id=r1' in line
    assert 'error="ConnectionRefusedError: [Errno 111] refused"' in line
    assert "\n" not in line


def test_a_bug_keeps_its_traceback_and_json_is_one_object_per_line() -> None:
    assert "Traceback" in KeyValueFormatter().format(_record(ValueError("bug")))
    fields = json.loads(JsonFormatter().format(_record(key="k-1")))
    assert fields["msg"] == "x y"
    assert fields["key"] == "k-1"
    assert fields["level"] == "warning"


def test_a_repeating_warning_passes_once_per_interval_and_counts_the_rest() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    repeat = RepeatFilter(every=3600)
    handler.addFilter(repeat)
    logger = logging.getLogger("test.repeat")
    logger.addHandler(handler)
    try:
        for _ in range(50):
            logger.warning("pass failed")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().count("pass failed") == 1
