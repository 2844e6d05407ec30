"""Outages of a dependency (database, broker, endpoint), logged so a person can read them.

A dependency that goes down is ONE line; while it stays down, at most one line every ``every``
seconds (with how long and how many failures); when it answers again, one line. A transient
failure is never a traceback: `is_transient` tells the log formatter which ones to shorten.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["Outage", "describe", "is_transient"]

# by name, so that core needs no driver: SQLAlchemy, asyncpg, nats-py, aiokafka, httpx
_TRANSIENT_NAMES = frozenset(
    {
        "StoreUnavailable",
        "TransportError",
        "NotSent",
        "OperationalError",
        "InterfaceError",
        "DisconnectionError",
        "CannotConnectNowError",
        "ConnectionDoesNotExistError",
        "NoServersError",
        "ConnectionClosedError",
        "StaleConnectionError",
        "NoRespondersError",
        "KafkaConnectionError",
        "KafkaTimeoutError",
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "RemoteProtocolError",
    }
)


def is_transient(exc: BaseException) -> bool:
    """An outage (refused, reset, timed out, unreachable), not a bug: worth one line, no trace."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError | TimeoutError | ConnectionError):
            return True
        if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(current).__mro__):
            return True
        current = current.__cause__ or current.__context__
    return False


def describe(exc: BaseException | str) -> str:
    """``Type: message`` on one line (the message alone for a string)."""
    if isinstance(exc, str):
        return exc
    text = " ".join(str(exc).split()) or repr(exc)
    return f"{type(exc).__name__}: {text}"


class Outage:
    """One dependency's availability as log lines: down once, a reminder at most every
    ``every`` seconds while down, back once."""

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.log = logger
        self.every = every
        self.clock = clock
        self.since: float | None = None
        self.failures = 0
        self._said_at = 0.0

    @property
    def is_down(self) -> bool:
        return self.since is not None

    def down(self, cause: BaseException | str) -> None:
        """Record a failure; logs when it starts, then at most once per ``every`` seconds."""
        now = self.clock()
        self.failures += 1
        if self.since is None:
            self.since, self._said_at = now, now
            self.log.warning(
                "%s unreachable: %s",
                self.what,
                describe(cause),
                extra={"dependency": self.what, "outage": "down"},
            )
        elif now - self._said_at >= self.every:
            self._said_at = now
            self.log.warning(
                "%s still unreachable after %.0fs (%d failures): %s",
                self.what,
                now - self.since,
                self.failures,
                describe(cause),
                extra={"dependency": self.what, "outage": "still"},
            )

    def up(self) -> None:
        """Record a success; logs once if the dependency was down."""
        if self.since is None:
            return
        lasted = self.clock() - self.since
        self.since, self.failures = None, 0
        self.log.info(
            "%s is back after %.0fs",
            self.what,
            lasted,
            extra={"dependency": self.what, "outage": "up"},
        )
