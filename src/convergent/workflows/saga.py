"""Sagas: when a step fails for good, undo the completed steps in reverse order.

Compensations are steps too (checkpointed, retried with their own policy); one that never
succeeds is dead-lettered with an alert and the others still run.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from convergent.errors import NonDeterminism
from convergent.workflows._context import Suspend, current_run
from convergent.workflows._registry import Step

__all__ = ["Saga"]

P = ParamSpec("P")
T = TypeVar("T")


class Saga:
    """``async with Saga() as saga: await saga.step(charge, order, compensate=refund)``."""

    def __init__(self) -> None:
        self._undo: list[tuple[Step[Any, Any], tuple[Any, ...]]] = []

    async def step(
        self, step: Step[..., T], *args: Any, compensate: Step[..., Any] | None = None
    ) -> T:
        """Run ``step(*args)``; remember ``compensate(*args)`` to undo it if a later step fails."""
        value = await step(*args)
        if compensate is not None:
            self._undo.append((compensate, args))
        return value

    async def compensate(self) -> None:
        """Run the compensations of the completed steps, newest first."""
        ctx = current_run()
        await ctx.begin_compensation()
        for compensation, args in reversed(self._undo):
            await compensation(*args)
        self._undo.clear()

    async def __aenter__(self) -> Saga:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or isinstance(exc, (Suspend, NonDeterminism)):
            return False  # code that does not match the run's history is not the business failing
        if not isinstance(exc, Exception):
            return False
        await self.compensate()
        return False  # the run still ends failed (or cancelled), after undoing
