"""Workflow and step arguments and results keep their annotated types across checkpoints."""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import BaseModel

from convergent.clock import ManualClock
from convergent.errors import ConfigurationError
from convergent.store import Store
from convergent.workflows import (
    StepContext,
    WorkflowContext,
    result,
    run_steps_of,
    step,
    submit,
    workflow,
)
from tests.integration.workflows.conftest import running, until

calls: Counter[str] = Counter()


class Charge(BaseModel):
    amount: Decimal
    due: datetime


@dataclasses.dataclass
class Receipt:
    id: uuid.UUID
    amount: Decimal
    seen: list[str]


@step
async def charge(ctx: StepContext, request: Charge) -> Receipt:
    calls["charge"] += 1
    assert isinstance(request, Charge)  # the step gets the model, not a dict
    return Receipt(uuid.UUID(int=7), request.amount, [type(request.due).__name__])


@workflow(name="tests.typed.pay")
async def pay(ctx: WorkflowContext, request: Charge) -> Receipt:
    assert isinstance(request, Charge)  # decoded from the stored arguments
    first = await charge(request)
    assert isinstance(first, Receipt)
    await ctx.sleep(60)  # the worker lets go; the replay reads `first` from its checkpoint
    again = await charge(Charge(amount=first.amount * 2, due=request.due))
    return Receipt(first.id, again.amount, first.seen + again.seen)


async def test_models_dataclasses_and_decimals_survive_a_replay(
    mstore: Store, clock: ManualClock
) -> None:
    calls.clear()
    due = datetime(2026, 12, 24, tzinfo=UTC)
    run_id = await submit(mstore, pay, Charge(amount=Decimal("10.10"), due=due))
    async with running(mstore):  # the first charge, then a durable sleep
        await until(lambda: _steps(mstore, run_id, 2))
    clock.advance(61)
    async with running(mstore):  # a new worker replays the first charge from its checkpoint
        done = await result(mstore, run_id, wait=10)
    assert done == Receipt(uuid.UUID(int=7), Decimal("20.20"), ["datetime", "datetime"])
    assert calls["charge"] == 2


async def _steps(store: Store, run_id: uuid.UUID, count: int) -> bool:
    return len(await run_steps_of(store, run_id)) >= count


class Socket:
    """Nothing pydantic can store."""


def test_a_step_whose_argument_cannot_be_stored_is_refused_when_declared() -> None:
    with pytest.raises(ConfigurationError, match="cannot be stored as JSON"):

        @step
        async def send(ctx: StepContext, sock: Socket) -> None:  # pragma: no cover
            raise AssertionError("never declared")
