from __future__ import annotations

import uuid

import httpx
import pytest

from convergent.idempotency import IdempotentClient, deterministic_key, new_key
from convergent.retry import RetryPolicy


def test_new_keys_are_uuid7() -> None:
    assert uuid.UUID(new_key()).version == 7
    assert new_key() != new_key()


def test_a_deterministic_key_is_stable_and_ignores_key_order() -> None:
    one = deterministic_key("orders", "c1", {"a": 1, "b": 2})
    assert one == deterministic_key("orders", "c1", {"b": 2, "a": 1})
    assert one != deterministic_key("orders", "c2", {"a": 1, "b": 2})
    assert one != deterministic_key("refunds", "c1", {"a": 1, "b": 2})


class Script:
    """A server that answers from a list and records each request's key."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.keys: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.keys.append(request.headers["Idempotency-Key"])
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def client(script: Script, sleeps: list[float], attempts: int = 5) -> IdempotentClient:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    http = httpx.AsyncClient(transport=httpx.MockTransport(script), base_url="http://t")
    policy = RetryPolicy(max_attempts=attempts, initial_delay=0.1, max_delay=2.0)
    return IdempotentClient(http, policy, sleep=sleep)


async def test_transport_errors_and_5xx_are_retried_with_the_same_key() -> None:
    script = Script(httpx.ConnectError("down"), httpx.Response(503), httpx.Response(201))
    response = await client(script, []).post("/orders", json={})
    assert response.status_code == 201
    assert len(script.keys) == 3
    assert len(set(script.keys)) == 1


async def test_a_409_with_retry_after_waits_at_least_that_long() -> None:
    sleeps: list[float] = []
    script = Script(httpx.Response(409, headers={"Retry-After": "2"}), httpx.Response(201))
    response = await client(script, sleeps).post("/orders", key="k-1")
    assert response.status_code == 201
    assert script.keys == ["k-1", "k-1"]
    assert sleeps == [2.0]


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
async def test_other_4xx_answers_are_final(status: int) -> None:
    script = Script(httpx.Response(status))
    response = await client(script, []).post("/orders")
    assert response.status_code == status
    assert len(script.keys) == 1


async def test_429_is_retried() -> None:
    script = Script(httpx.Response(429), httpx.Response(200))
    assert (await client(script, []).post("/orders")).status_code == 200


async def test_backoff_is_full_jitter_within_the_policy_cap() -> None:
    sleeps: list[float] = []
    script = Script(*[httpx.Response(500)] * 4, httpx.Response(200))
    await client(script, sleeps).post("/orders")
    caps = [0.1, 0.2, 0.4, 0.8]
    assert all(0 <= s <= cap for s, cap in zip(sleeps, caps, strict=True))


async def test_when_attempts_run_out_the_last_answer_is_returned() -> None:
    script = Script(httpx.Response(500), httpx.Response(502))
    assert (await client(script, [], attempts=2).post("/orders")).status_code == 502


async def test_when_attempts_run_out_the_last_transport_error_is_raised() -> None:
    script = Script(httpx.ConnectError("a"), httpx.ReadTimeout("b"))
    with pytest.raises(httpx.ReadTimeout):
        await client(script, [], attempts=2).post("/orders")


async def test_the_policy_deadline_stops_retrying_with_the_last_answer() -> None:
    sleeps: list[float] = []
    script = Script(httpx.Response(409, headers={"Retry-After": "3"}), httpx.Response(201))

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    http = httpx.AsyncClient(transport=httpx.MockTransport(script), base_url="http://t")
    policy = RetryPolicy(max_attempts=5, initial_delay=0.1, deadline=2.0)
    response = await IdempotentClient(http, policy, sleep=sleep).post("/orders")
    assert response.status_code == 409
    assert sleeps == []
