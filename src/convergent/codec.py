"""Typed values in and out of JSON: what workflows, steps and topics store.

Arguments and results may be anything pydantic can validate and serialise: models, dataclasses,
TypedDicts, ``datetime``, ``Decimal``, ``UUID``, ``Enum``, containers of them. A value is stored
as JSON (``TypeAdapter.dump_python(mode="json")``) and read back as its annotated type, so a
replay sees exactly what the first run saw. An annotation pydantic cannot handle is refused when
the function is declared, never after a side effect.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import PydanticSchemaGenerationError, TypeAdapter
from pydantic_core import PydanticSerializationError, ValidationError

from convergent.errors import ConfigurationError, WorkflowError

__all__ = ["Codec", "SignatureCodec", "UnresolvedAnnotation", "encode_any"]

_PLAIN = (str, int, bool, float, type(None))


class UnresolvedAnnotation(ConfigurationError):
    """An annotation names a type that cannot be found (yet): declared later in its module, or
    local to a function."""


@dataclass(frozen=True)
class Codec:
    """Encodes values of one annotated type to JSON-ready data and decodes them back."""

    annotation: Any

    @cached_property
    def adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.annotation)

    @property
    def is_any(self) -> bool:
        return self.annotation is Any

    def encode(self, value: Any) -> Any:
        if type(value) in _PLAIN:
            return value  # reads back as itself
        try:
            return self.adapter.dump_python(value, mode="json")
        except (PydanticSerializationError, ValueError, TypeError) as exc:
            raise WorkflowError(
                f"cannot store {type(value).__name__} as JSON: annotate it with a type pydantic "
                f"can serialise (a model, dataclass, datetime, Decimal, UUID, Enum...): {exc}"
            ) from exc

    def decode(self, data: Any) -> Any:
        if self.is_any or data is None:
            return data
        if type(data) is self.annotation and self.annotation in _PLAIN:
            return data  # a plain value of exactly its declared type validates as itself
        try:
            return self.adapter.validate_python(data)
        except ValidationError as exc:
            raise WorkflowError(
                f"stored value does not read back as {self.annotation!r}: "
                f"{exc.errors(include_url=False)}"
            ) from exc


ANY = Codec(Any)


def encode_any(value: Any) -> Any:
    """JSON-ready data for a value of no declared type."""
    return ANY.encode(value)


@dataclass(frozen=True)
class SignatureCodec:
    """The codecs of a function's parameters (after its context) and of its result."""

    positional: tuple[Codec, ...]
    variadic: Codec | None
    keywords: Mapping[str, Codec]
    result: Codec

    @classmethod
    def of(cls, fn: Callable[..., Any], *, skip: int = 1) -> SignatureCodec:
        """Build from ``fn``'s annotations (unannotated means any JSON). Raises
        ConfigurationError naming the parameter whose type cannot be stored."""
        name = getattr(fn, "__qualname__", repr(fn))
        signature = inspect.signature(fn)
        hints = _hints(fn, name, [p.name for p in list(signature.parameters.values())[:skip]])
        positional: list[Codec] = []
        variadic: Codec | None = None
        keywords: dict[str, Codec] = {}
        for param in list(signature.parameters.values())[skip:]:
            codec = _codec(name, param.name, hints.get(param.name, Any))
            if param.kind is param.VAR_POSITIONAL:
                variadic = codec
            elif param.kind is param.VAR_KEYWORD:
                continue
            else:
                keywords[param.name] = codec
                if param.kind is not param.KEYWORD_ONLY:
                    positional.append(codec)
        result = _codec(name, "return", _unwrap_awaitable(hints.get("return", Any)))
        return cls(tuple(positional), variadic, keywords, result)

    def _positional(self, index: int) -> Codec:
        if index < len(self.positional):
            return self.positional[index]
        return self.variadic or ANY

    def encode_args(self, args: Sequence[Any]) -> list[Any]:
        return [self._positional(i).encode(a) for i, a in enumerate(args)]

    def decode_args(self, data: Sequence[Any]) -> list[Any]:
        return [self._positional(i).decode(a) for i, a in enumerate(data)]


def _hints(fn: Callable[..., Any], name: str, context: list[str]) -> dict[str, Any]:
    """``fn``'s resolved annotations. The context parameters are never decoded, so their
    annotation need not resolve (a workflow declared inside a function may name a locally
    imported ``WorkflowContext``); every other one must."""
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except NameError:
        pass
    hints: dict[str, Any] = {}
    for param, annotation in getattr(fn, "__annotations__", {}).items():
        if param in context:
            continue
        try:
            hints[param] = typing.get_type_hints(
                _Annotated({param: annotation}, fn), include_extras=True
            )[param]
        except NameError as exc:
            raise UnresolvedAnnotation(
                f"{name}: cannot resolve the annotation {exc.name!r}; declare that type at module "
                "level, where convergent can find it"
            ) from exc
    return hints


class _Annotated:
    """One annotation of ``fn``, resolved in ``fn``'s module (for typing.get_type_hints)."""

    def __init__(self, annotations: dict[str, Any], fn: Callable[..., Any]) -> None:
        self.__annotations__ = annotations
        self.__globals__ = getattr(fn, "__globals__", {})
        self.__module__ = fn.__module__


def _unwrap_awaitable(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is not None and getattr(origin, "__name__", "") in ("Awaitable", "Coroutine"):
        return typing.get_args(annotation)[-1]
    return annotation


def _codec(function: str, parameter: str, annotation: Any) -> Codec:
    codec = Codec(annotation)
    if codec.is_any:
        return codec
    try:
        codec.adapter  # noqa: B018 - building the adapter is the check
    except (PydanticSchemaGenerationError, TypeError) as exc:
        raise ConfigurationError(
            f"{function}: {parameter} is annotated {annotation!r}, which cannot be stored as "
            "JSON; use a pydantic model, a dataclass, or plain JSON types"
        ) from exc
    return codec
