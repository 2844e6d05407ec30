"""Change notification: wake-ups sent when a transaction commits, used as hints.

PostgreSQL: ``pg_notify`` inside the writer's transaction (delivered on commit) and ``LISTEN`` on
one dedicated connection. SQLite: an in-process signal fired after commit. A waiter must always
re-check the database and fall back to a slow poll: a hint can be late, lost (another process on
SQLite, a dropped LISTEN connection) or spurious.

Each (channel, payload) is sent at most once per transaction, so a transaction that writes
thousands of rows sends one NOTIFY, not thousands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from convergent.store import direct

__all__ = ["Notifier", "NotifyingWrite", "Subscription"]

log = logging.getLogger(__name__)

_PENDING = "convergent.notify.pending"
# built once and sent through `direct`: a NOTIFY follows most writes of the hot paths
# (labelled: `direct` sends a statement straight to the driver only when its columns have names)
_NOTIFY = sa.select(
    sa.func.pg_notify(
        sa.bindparam("b_channel", type_=sa.String), sa.bindparam("b_payload", type_=sa.String)
    ).label("notified")
)
_hooked: weakref.WeakSet[Engine] = weakref.WeakSet()


class NotifyingWrite:
    """An INSERT (and optionally a second one, ``then``) that wakes ``channel`` when its
    transaction commits, built once.

    On PostgreSQL the rows and the NOTIFY go in one statement (the INSERTs as CTEs of the
    ``pg_notify`` select; a foreign key from the second row to the first holds, as constraints
    are checked at the end of the statement): one round trip instead of two or three for the
    writes that wake another process (an outbox row, a webhook, a change to a resource).
    Elsewhere, or when this transaction has already sent the same NOTIFY, the INSERTs one by
    one and `Notifier.notify`. Sent by `Notifier.write`. ``columns`` None: every column.
    """

    def __init__(
        self,
        table: sa.Table,
        columns: Sequence[str] | None,
        channel: str,
        *,
        then: tuple[sa.Table, Sequence[str] | None] | None = None,
    ) -> None:
        self.channel = channel
        self.inserts = [sa.insert(table)] + ([sa.insert(then[0])] if then else [])
        written = [_bound_insert(table, columns, "", "written")]
        if then is not None:
            written.append(_bound_insert(then[0], then[1], _THEN, "then_written"))
        self.with_notify = _NOTIFY.add_cte(*written)


_THEN = "t_"  # the second row's parameters, in the one statement


def _bound_insert(table: sa.Table, columns: Sequence[str] | None, prefix: str, name: str) -> Any:
    names = [c.key for c in table.columns] if columns is None else columns
    values = {c: sa.bindparam(prefix + c, type_=table.c[c].type) for c in names}
    return sa.insert(table).values(values).cte(name)


# in-process subscribers by database identity, for SQLite (and as a fast path in one process)
_local: dict[str, dict[str, set[Subscription]]] = defaultdict(lambda: defaultdict(set))
_SQLITE_FIRE_DELAY = 0.002  # the commit event fires before the commit lands; let it land


def _db_identity(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _hook(engine: Engine) -> None:
    if engine in _hooked:
        return
    _hooked.add(engine)
    event.listen(engine, "commit", _on_commit)
    event.listen(engine, "rollback", _on_rollback)


def _on_commit(conn: Connection) -> None:
    if conn.invalidated:  # the connection is gone; so is what it was to announce
        return
    pending: set[tuple[str, str]] | None = conn.info.pop(_PENDING, None)
    if not pending or conn.dialect.name == "postgresql":
        return
    identity = _db_identity(conn.engine)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    for channel, payload in pending:
        loop.call_later(_SQLITE_FIRE_DELAY, _fire_local, identity, channel, payload)


def _on_rollback(conn: Connection) -> None:
    # a lost connection rolls back too; touching it then would hide the real error
    if not conn.invalidated:
        conn.info.pop(_PENDING, None)


def _fire_local(identity: str, channel: str, payload: str) -> None:
    for sub in list(_local[identity].get(channel, ())):
        sub.deliver(payload)


class Subscription:
    """Receives the wake-ups of one channel until closed (their payloads, up to ``KEPT``)."""

    KEPT = 1024

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self._event = asyncio.Event()
        self.payloads: list[str] = []

    def deliver(self, payload: str) -> None:
        if len(self.payloads) < self.KEPT:
            self.payloads.append(payload)
        self._event.set()

    async def wait(self, timeout: float | None) -> bool:
        """Wait for a wake-up; True if one came, False on timeout. Clears what was received."""
        try:
            if timeout is None:
                await self._event.wait()
            else:
                await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            if self._event.is_set():
                self._event.clear()
        return True

    def drain(self) -> list[str]:
        out, self.payloads = self.payloads, []
        return out


class Notifier:
    """Sends hints inside transactions and hands out subscriptions."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._identity = _db_identity(engine.sync_engine)
        self._is_pg = engine.dialect.name == "postgresql"
        self._listen_conn: AsyncConnection | None = None
        self._driver: Any = None
        self._listening: dict[str, set[Subscription]] = defaultdict(set)
        self._added: set[str] = set()  # channels LISTENed on the current connection
        self._relisten: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        _hook(engine.sync_engine)

    async def notify(self, conn: AsyncConnection, channel: str, payload: str = "") -> None:
        """Send ``channel``/``payload`` when the transaction of ``conn`` commits (once per tx)."""
        _hook(conn.sync_engine)
        pending: set[tuple[str, str]] = conn.info.setdefault(_PENDING, set())
        if (channel, payload) in pending:
            return
        pending.add((channel, payload))
        if conn.dialect.name == "postgresql":
            await direct.execute(conn, _NOTIFY, {"b_channel": channel, "b_payload": payload})

    async def write(
        self,
        conn: AsyncConnection,
        write: NotifyingWrite,
        row: dict[str, Any],
        then: dict[str, Any] | None = None,
        *,
        payload: str = "",
    ) -> None:
        """Insert ``row`` (and ``then``, if ``write`` has a second table) in ``conn``'s
        transaction and send ``write.channel``/``payload`` when it commits: on PostgreSQL in
        one statement."""
        rows = [row] if then is None else [row, then]
        if len(rows) != len(write.inserts):
            raise TypeError(f"this write inserts {len(write.inserts)} rows, not {len(rows)}")
        if conn.dialect.name == "postgresql":
            _hook(conn.sync_engine)
            pending: set[tuple[str, str]] = conn.info.setdefault(_PENDING, set())
            if (write.channel, payload) not in pending:
                params = {**row, "b_channel": write.channel, "b_payload": payload}
                if then is not None:
                    params.update({_THEN + k: v for k, v in then.items()})
                await direct.execute(conn, write.with_notify, params)
                pending.add((write.channel, payload))
                return
        for insert, values in zip(write.inserts, rows, strict=True):
            await direct.execute(conn, insert, values)
        await self.notify(conn, write.channel, payload)

    async def notify_now(self, conn: AsyncConnection, channel: str, payload: str = "") -> None:
        """Send ``channel``/``payload`` from an autocommit connection (no transaction to wait
        for: the statement before it has committed)."""
        if self._is_pg:
            await direct.execute(conn, _NOTIFY, {"b_channel": channel, "b_payload": payload})
        else:
            _fire_local(self._identity, channel, payload)

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        sub = Subscription(channel)
        _local[self._identity][channel].add(sub)
        if self._is_pg:
            await self._listen(channel, sub)
        try:
            yield sub
        finally:
            _local[self._identity][channel].discard(sub)
            self._listening[channel].discard(sub)

    async def _listen(self, channel: str, sub: Subscription) -> None:
        async with self._lock:
            self._listening[channel].add(sub)
            try:
                if self._driver is None or self._driver.is_closed():
                    await self._reconnect()
                elif channel not in self._added:
                    await self._driver.add_listener(channel, self._on_pg_notify)
                    self._added.add(channel)
            except Exception as exc:  # the poll fallback covers a missing LISTEN meanwhile
                log.warning("LISTEN %s failed, retrying in the background: %s", channel, exc)
                await self._close_listener()
                self._relisten_soon()

    async def _reconnect(self) -> None:
        await self._close_listener()
        self._listen_conn = await self._engine.connect()
        raw = await self._listen_conn.get_raw_connection()
        self._driver = raw.driver_connection
        self._driver.add_termination_listener(self._on_terminated)
        for channel, subs in self._listening.items():
            if subs:
                await self._driver.add_listener(channel, self._on_pg_notify)
                self._added.add(channel)

    def _on_terminated(self, driver: Any) -> None:
        # the server restarted or dropped us: LISTEN again once it is back
        if driver is self._driver:
            self._driver = None
            self._relisten_soon()

    def _relisten_soon(self) -> None:
        if self._relisten is None or self._relisten.done():
            self._relisten = asyncio.get_running_loop().create_task(self._relisten_loop())

    async def _relisten_loop(self) -> None:
        delay = 0.2
        while any(self._listening.values()):
            await asyncio.sleep(delay)
            async with self._lock:
                if self._driver is not None and not self._driver.is_closed():
                    return
                try:
                    await self._reconnect()
                except Exception as exc:
                    log.info("LISTEN not back yet: %s", exc)
                    await self._close_listener()
                    delay = min(delay * 2, 5.0)
                    continue
            log.info("LISTEN restored")
            for subs in list(self._listening.values()):  # hints may have been missed meanwhile
                for each in list(subs):
                    each.deliver("")
            return

    def _on_pg_notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        for sub in list(self._listening.get(channel, ())):
            sub.deliver(payload)

    async def _close_listener(self) -> None:
        self._added.clear()
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await self._listen_conn.invalidate()
                await self._listen_conn.close()
        self._listen_conn = None
        self._driver = None

    async def close(self) -> None:
        if self._relisten is not None:
            self._relisten.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._relisten
            self._relisten = None
        async with self._lock:
            await self._close_listener()
