from __future__ import annotations

import pytest

from tests.integration.idempotency.conftest import Harness

PROBLEM = "application/problem+json"


async def test_a_missing_key_is_a_problem_naming_the_rule(harness: Harness) -> None:
    response = await harness.post(key=None)
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/idempotency-key-missing")
    assert harness.calls == 0


@pytest.mark.parametrize("key", ["", '"unterminated', "x" * 256, "caf\u00e9", '"a\\nb"'])
async def test_a_malformed_key_is_a_400_problem(harness: Harness, key: str) -> None:
    response = await harness.http.post(
        "/things",
        json={"n": 1},
        headers=[(b"Idempotency-Key", key.encode()), (b"X-Api-Key", b"a")],
    )
    assert response.status_code == 400
    assert response.json()["type"].endswith("/idempotency-key-invalid")
    assert harness.calls == 0


async def test_a_protected_route_without_a_client_is_a_401_and_runs_nothing(
    harness: Harness,
) -> None:
    response = await harness.post(client=None)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert harness.calls == 0
    assert await harness.keys() == []


async def test_one_client_never_receives_another_clients_stored_response(
    harness: Harness,
) -> None:
    mine = await harness.post({"n": 1}, client="a")
    theirs = await harness.post({"n": 1}, client="b")
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"]
    assert harness.calls == 2


async def test_the_same_key_for_a_different_request_is_a_422_and_runs_nothing(
    harness: Harness,
) -> None:
    await harness.post({"n": 1})
    other = await harness.post({"n": 2})
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-mismatch")
    assert harness.calls == 1
    assert await harness.rows() == 1


async def test_the_same_key_on_another_path_is_a_mismatch(harness: Harness) -> None:
    await harness.post(path="/things/t1/poke")
    other = await harness.post(path="/things/t2/poke")
    assert other.status_code == 422


async def test_invalid_json_is_rejected_and_stores_nothing(harness: Harness) -> None:
    response = await harness.http.post(
        "/things",
        content=b"{not json",
        headers={"Content-Type": "application/json", "Idempotency-Key": "k-1", "X-Api-Key": "a"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    assert await harness.keys() == []
    assert (await harness.post({"n": 1})).status_code == 201


async def test_a_body_over_the_limit_is_a_413_and_stores_nothing(harness: Harness) -> None:
    response = await harness.post({"blob": "x" * (1 << 20)})
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert harness.calls == 0
    assert await harness.keys() == []
