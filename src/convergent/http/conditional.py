"""Conditional requests (RFC 9110 §13): ETags from versions, If-Match and If-None-Match.

The ETag of a resource is its version as a strong validator (``"3"``). ``evaluate`` applies the
preconditions in the order of RFC 9110 §13.2.2 and returns the version a write must be
conditioned on, so the check and the write stay one atomic UPDATE (a change in between is a
StaleVersion, answered 412 like a failed If-Match).
"""

from __future__ import annotations

from dataclasses import dataclass

from convergent.errors import MissingExtra

try:
    from starlette.requests import Request
except ImportError as exc:
    raise MissingExtra("fastapi", "convergent.http") from exc

from convergent.errors import PreconditionFailed, PreconditionRequired

__all__ = ["Evaluation", "etag", "evaluate", "evaluate_request", "parse_etags"]

_SAFE = frozenset({"GET", "HEAD"})


def etag(version: int) -> str:
    """The strong ETag of ``version``."""
    return f'"{version}"'


def parse_etags(value: str) -> list[str] | None:
    """Entity tags of an If-Match/If-None-Match value; None means ``*``."""
    if value.strip() == "*":
        return None
    return [tag.strip() for tag in value.split(",") if tag.strip()]


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


@dataclass(frozen=True)
class Evaluation:
    """The outcome of the preconditions that held."""

    expected_version: int | None = None  # condition the write on this version
    not_modified: bool = False  # GET/HEAD: answer 304


def evaluate(
    method: str,
    current_version: int | None,
    *,
    if_match: str | None = None,
    if_none_match: str | None = None,
    require_if_match: bool = False,
) -> Evaluation:
    """Evaluate preconditions against the current version (None: no current representation).

    Raises PreconditionRequired (428) when ``require_if_match`` and none was sent, and
    PreconditionFailed (412) when a precondition is false on an unsafe method.
    """
    method = method.upper()
    if require_if_match and if_match is None and method not in _SAFE:
        raise PreconditionRequired(
            "this request must be conditional: send If-Match with the ETag you last read"
        )
    expected: int | None = None
    # step 1: If-Match, strong comparison
    if if_match is not None:
        tags = parse_etags(if_match)
        if current_version is None:
            raise PreconditionFailed("If-Match given but the resource does not exist")
        if tags is not None:
            if etag(current_version) not in tags:
                raise PreconditionFailed(
                    f"the resource changed: its ETag is {etag(current_version)}",
                    current_etag=etag(current_version),
                )
            expected = current_version
    # step 2 (If-Unmodified-Since) does not apply: versions are our only validators
    # step 3: If-None-Match, weak comparison
    if if_none_match is not None and current_version is not None:
        tags = parse_etags(if_none_match)
        current = etag(current_version)
        matched = tags is None or any(_opaque(t) == current for t in tags)
        if matched:
            if method in _SAFE:
                return Evaluation(expected, not_modified=True)
            raise PreconditionFailed(
                "the resource already exists" if tags is None else "the resource matches",
                current_etag=current,
            )
    return Evaluation(expected)


def evaluate_request(
    request: Request, current_version: int | None, *, require_if_match: bool = False
) -> Evaluation:
    """``evaluate`` with the method and headers of a Starlette/FastAPI request."""
    return evaluate(
        request.method,
        current_version,
        if_match=request.headers.get("if-match"),
        if_none_match=request.headers.get("if-none-match"),
        require_if_match=require_if_match,
    )
