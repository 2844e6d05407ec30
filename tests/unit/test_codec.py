"""Typed values to JSON and back, by annotation (pure)."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from convergent.codec import Codec, SignatureCodec, UnresolvedAnnotation, encode_any
from convergent.errors import ConfigurationError, WorkflowError


class Colour(enum.Enum):
    RED = "red"


class Money(BaseModel):
    amount: Decimal
    currency: str


@dataclasses.dataclass
class Parcel:
    id: uuid.UUID
    at: datetime
    colour: Colour


class Opaque:
    """Not something pydantic can store."""


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (Money, Money(amount=Decimal("10.50"), currency="EUR")),
        (Parcel, Parcel(uuid.uuid4(), datetime(2026, 1, 2, 3, 4, tzinfo=UTC), Colour.RED)),
        (datetime, datetime(2026, 12, 1, tzinfo=UTC)),
        (Decimal, Decimal("0.1")),
        (uuid.UUID, uuid.uuid4()),
        (Colour, Colour.RED),
        (list[Money], [Money(amount=Decimal(1), currency="USD")]),
    ],
)
def test_a_value_reads_back_as_its_annotated_type(annotation: Any, value: Any) -> None:
    codec = Codec(annotation)
    data = codec.encode(value)
    assert codec.decode(data) == value
    assert type(codec.decode(data)) is type(value)
    import json

    json.dumps(data)  # JSON-ready


def test_an_unannotated_value_is_stored_as_plain_json() -> None:
    assert encode_any({"at": datetime(2026, 1, 1, tzinfo=UTC)}) == {"at": "2026-01-01T00:00:00Z"}
    assert Codec(Any).decode({"a": 1}) == {"a": 1}


def test_a_value_that_cannot_be_json_says_what_to_do() -> None:
    with pytest.raises(WorkflowError, match="annotate it"):
        encode_any(Opaque())


def test_a_signature_codec_reads_every_parameter_after_the_context() -> None:
    async def fn(ctx: object, money: Money, *more: Decimal) -> Parcel:
        raise NotImplementedError

    codec = SignatureCodec.of(fn)
    data = codec.encode_args([Money(amount=Decimal(2), currency="EUR"), Decimal("1.5")])
    assert data == [{"amount": "2", "currency": "EUR"}, "1.5"]
    assert codec.decode_args(data) == [Money(amount=Decimal(2), currency="EUR"), Decimal("1.5")]
    assert codec.result.annotation is Parcel


def test_an_unstorable_annotation_is_refused_at_declaration() -> None:
    async def fn(ctx: object, thing: Opaque) -> None:
        raise NotImplementedError

    with pytest.raises(ConfigurationError, match="thing is annotated"):
        SignatureCodec.of(fn)


def test_an_unstorable_result_is_refused_at_declaration() -> None:
    async def fn(ctx: object) -> Opaque:
        raise NotImplementedError

    with pytest.raises(ConfigurationError, match="return is annotated"):
        SignatureCodec.of(fn)


def test_a_name_that_cannot_be_resolved_is_named() -> None:
    from convergent.codec import UnresolvedAnnotation

    async def fn(ctx: object, later: NotDeclaredAnywhere) -> None:  # type: ignore[name-defined]  # noqa: F821
        raise NotImplementedError

    with pytest.raises(UnresolvedAnnotation, match="NotDeclaredAnywhere"):
        SignatureCodec.of(fn)


def test_a_workflow_declared_in_a_function_may_name_a_locally_imported_context() -> None:
    from convergent.workflows import WorkflowContext as LocalContext

    async def flow(ctx: LocalContext, x: int) -> int:
        return x

    codec = SignatureCodec.of(flow)  # the context is never decoded: its name need not resolve
    assert codec.decode_args(["3"]) == [3]

    class Local:
        pass

    async def bad(ctx: LocalContext, x: Local) -> int:
        return 1

    with pytest.raises(UnresolvedAnnotation, match="'Local'; declare that type at module level"):
        SignatureCodec.of(bad)
