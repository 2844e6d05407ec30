"""The event loop a convergent process runs on: uvloop where installed, asyncio's on request."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
import uvloop

from convergent import eventloop
from convergent.errors import ConfigurationError, MissingExtra


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_uvloop_by_default_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVERGENT_EVENT_LOOP", raising=False)
    assert eventloop.loop_name() == "uvloop"
    assert issubclass(eventloop.run(_loop_type()), uvloop.Loop)


def test_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERGENT_EVENT_LOOP", "asyncio")
    assert eventloop.loop_factory() is None
    assert eventloop.loop_name() == "asyncio"
    assert not issubclass(eventloop.run(_loop_type()), uvloop.Loop)


def test_a_wrong_choice_names_the_right_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERGENT_EVENT_LOOP", "trio")
    with pytest.raises(ConfigurationError, match="CONVERGENT_EVENT_LOOP='trio'"):
        eventloop.loop_factory()


def test_uvloop_insisted_on_but_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERGENT_EVENT_LOOP", "uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import fails
    with pytest.raises(MissingExtra, match=r"convergent\[fast\]"):
        eventloop.loop_factory()
    monkeypatch.setenv("CONVERGENT_EVENT_LOOP", "auto")
    assert eventloop.loop_factory() is None  # auto falls back to asyncio's loop


_GC_PROBE = (
    "import gc; from convergent import eventloop; before = gc.get_threshold(); "
    "eventloop.tune_gc(); print(before != gc.get_threshold(), gc.get_threshold(), "
    "gc.get_freeze_count() > 0)"
)


def _probe(env: dict[str, str]) -> str:
    # in a process of its own: the collector of the test process is not ours to change
    return subprocess.run(
        [sys.executable, "-c", _GC_PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_tune_gc_freezes_start_up_and_collects_young_objects_less_often() -> None:
    assert _probe({}) == f"True {eventloop.GC_THRESHOLDS} True"


def test_gc_tuning_off_keeps_pythons_collector() -> None:
    assert _probe({"CONVERGENT_GC_TUNING": "0"}) == "False (700, 10, 10) False"
