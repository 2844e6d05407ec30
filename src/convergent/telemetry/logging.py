"""Structured logs: ``key=value`` lines by default, JSON lines on request.

Every line carries time, level, logger and message, the fields a caller passed with
``extra={...}`` (``run_id``, ``key``, ``topic``, ...) and the current trace id when OpenTelemetry
has a span. A transient failure (`convergent.outages.is_transient`) is rendered as one ``error=``
field, never a traceback, and the same line repeating is held to one every few seconds.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from opentelemetry import trace

from convergent.outages import describe, is_transient

__all__ = ["JsonFormatter", "KeyValueFormatter", "RepeatFilter", "configure_logging"]

LogFormat = Literal["kv", "json"]

# the attributes every LogRecord has; anything else came from ``extra=``
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "repeated",
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for name, value in record.__dict__.items():
        if name not in _STANDARD and not name.startswith("_") and value is not None:
            fields[name] = value
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        fields.setdefault("trace_id", format(context.trace_id, "032x"))
        fields.setdefault("span_id", format(context.span_id, "016x"))
    repeated = getattr(record, "repeated", 0)
    if repeated:
        fields["repeated"] = repeated
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        fields["error"] = describe(exc)
        if not is_transient(exc):
            fields["traceback"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
    return fields


def _kv_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if text and not any(c in text for c in ' "=\n\t'):
        return text
    return json.dumps(text, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """``time=… level=warning logger=convergent.outbox.relay msg="…" topic=orders``; a
    traceback (of a bug, not an outage) follows on its own lines."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        tb = fields.pop("traceback", None)
        line = " ".join(f"{k}={_kv_value(v)}" for k, v in fields.items())
        return line if tb is None else f"{line}\n{tb}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line (a traceback is its ``traceback`` field)."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), ensure_ascii=False, default=str)


class RepeatFilter(logging.Filter):
    """The same line (logger + message) at WARNING or above passes once every ``every``
    seconds; the next one that passes says how many were held back (``repeated=N``)."""

    def __init__(self, every: float = 5.0) -> None:
        super().__init__()
        self.every = every
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or getattr(record, "outage", None):
            return True  # Outage lines are already paced
        key = (record.name, record.getMessage())
        now = time.monotonic()
        said_at, held = self._last.get(key, (-1e18, 0))
        if now - said_at < self.every:
            self._last[key] = (said_at, held + 1)
            return False
        if len(self._last) >= 1000:  # distinct lines: forget those not seen for a while
            self._last = {k: v for k, v in self._last.items() if now - v[0] < self.every}
        self._last[key] = (now, 0)
        record.repeated = held
        return True


def configure_logging(
    fmt: LogFormat = "kv", level: str | int = "INFO", stream: TextIO | None = None
) -> logging.Handler:
    """Send every log line of this process to ``stream`` (stderr) in ``fmt``; replaces the
    handler a previous call installed. Returns the handler."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_convergent", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    handler.addFilter(RepeatFilter())
    handler._convergent = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a line per plugin at start-up
    # a line per outbound request (each webhook attempt, each provider call) is noise at INFO:
    # attempts are recorded, counted and traced already; DEBUG shows them again
    quiet = root.level >= logging.INFO
    logging.getLogger("httpx").setLevel(logging.WARNING if quiet else logging.NOTSET)
    return handler
