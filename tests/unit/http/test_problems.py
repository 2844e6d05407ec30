"""Every error answer is problem+json, including a bug's: a stable type and a trace id only."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI

from convergent.http import RequestGuard
from convergent.http.guard import check_json
from convergent.http.problem import Problem, install_problem_handlers


def app_with_a_bug() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(RequestGuard, max_body=100)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    return app


async def test_an_unhandled_exception_is_a_500_problem_with_a_trace_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = httpx.ASGITransport(app=app_with_a_bug(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        answer = await http.get("/boom")
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["type"] == "https://convergent.dev/problems/internal-error"
    assert len(body["trace_id"]) == 32
    assert "hunter2" not in answer.text
    assert "RuntimeError" not in answer.text
    assert any(
        body["trace_id"] in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
    )


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"a": "\\u0000"}', 422),
        (b'{"a": "\\\\u0000"}', None),  # an escaped backslash, then the text u0000: fine
        (b'{"a": "\\\\\\u0000"}', 422),
        (b'{"a": "[[[[[[[[[["}', None),  # brackets inside a string do not nest
        (b'{"a": ' + b"[" * 9 + b"]" * 9 + b"}", 422),
        (b'{"a": ' + b"[" * 8 + b"]" * 8 + b"}", None),
        (b'{"a": "\\udc00"}', 422),
        (b'{"a": 1e999999}', None),  # inf: the model's validation decides
        (b'{"a": Infinity}', 400),
        (b"{", 400),
    ],
)
def test_check_json(body: bytes, status: int | None) -> None:
    if status is None:
        check_json(body, max_depth=9)
        return
    with pytest.raises(Problem) as refused:
        check_json(body, max_depth=9)
    assert refused.value.status == status
