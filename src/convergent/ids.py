"""Identifiers: UUIDv7 (RFC 9562), time-ordered so new rows land at the end of an index."""

from __future__ import annotations

import os
import threading
import time
import uuid

__all__ = ["new_id", "uuid7", "uuid7_time"]

_lock = threading.Lock()
_last_ms = 0
_counter = 0
# random bits come from the OS in 4 KiB reads (one system call per ~400 ids, not two per id)
_random = b""
_random_at = 0


def _forget_random() -> None:
    global _random, _random_at
    _random, _random_at = b"", 0


# a forked child must not hand out the bits its parent also uses
os.register_at_fork(after_in_child=_forget_random)


def _random_int(n: int) -> int:
    """``n`` bytes from the OS's random source as an integer (call with ``_lock`` held)."""
    global _random, _random_at
    if _random_at + n > len(_random):
        _random, _random_at = os.urandom(4096), 0
    _random_at += n
    return int.from_bytes(_random[_random_at - n : _random_at], "big")


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """A UUIDv7; ids made in one process are strictly increasing (12-bit counter, RFC 9562 §6.2)."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        if ms <= _last_ms:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted within one millisecond: borrow the next one
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _counter = _random_int(2) & 0x3FF  # leave room to count up
        rand_b = _random_int(8) & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76
        value |= _counter << 64
        value |= 0b10 << 62
        value |= rand_b
    return uuid.UUID(int=value)


def uuid7_time(value: uuid.UUID) -> float:
    """Unix time in seconds encoded in a UUIDv7."""
    return (value.int >> 80) / 1000.0


def new_id() -> str:
    """A UUIDv7 as its canonical string."""
    return str(uuid7())
