from __future__ import annotations

from tests.integration.idempotency.conftest import Harness


async def test_the_first_request_executes_once_and_a_retry_replays_it(harness: Harness) -> None:
    first = await harness.post({"n": 1})
    again = await harness.post({"n": 1})
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert harness.calls == 1
    assert await harness.rows() == 1


async def test_a_replay_carries_the_headers_that_matter_and_says_it_is_one(
    harness: Harness,
) -> None:
    first = await harness.post()
    again = await harness.post()
    assert "idempotent-replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    for name in ("content-type", "location", "etag"):
        assert again.headers[name] == first.headers[name]
    assert first.headers["set-cookie"] == "s=1"
    assert "set-cookie" not in again.headers


async def test_the_quoted_and_bare_forms_name_the_same_key(harness: Harness) -> None:
    await harness.post(key="abc")
    again = await harness.post(key='"abc"')
    assert again.headers["Idempotent-Replayed"] == "true"
    assert harness.calls == 1


async def test_key_order_and_whitespace_in_the_body_do_not_matter(harness: Harness) -> None:
    headers = {"Content-Type": "application/json", "Idempotency-Key": "k-1", "X-Api-Key": "a"}
    await harness.http.post("/things", content=b'{"a": 1,\n "b": 2}', headers=headers)
    again = await harness.http.post("/things", content=b'{"b":2,"a":1}', headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_path_templates_protect_matching_paths(harness: Harness) -> None:
    await harness.post(path="/things/t1/poke")
    again = await harness.post(path="/things/t1/poke")
    missing = await harness.post(path="/things/t1/poke", key=None)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert missing.status_code == 400
    assert harness.calls == 1


async def test_an_unprotected_route_commits_its_own_transaction(harness: Harness) -> None:
    response = await harness.http.post("/open")
    assert response.status_code == 200
    assert await harness.rows() == 1
    assert await harness.keys() == []


async def test_only_the_headers_that_matter_are_stored(harness: Harness) -> None:
    await harness.post()
    (row,) = await harness.keys()
    names = {name for name, _ in row.response_headers}
    assert names == {"content-type", "location", "etag"}


async def test_an_after_commit_answer_goes_to_the_first_caller_and_replays_get_the_stored_one(
    harness: Harness,
) -> None:
    first = await harness.post(path="/waiting")
    again = await harness.post(path="/waiting")
    assert first.status_code == 201
    assert first.json()["rows"] == 1  # it ran after the commit, outside the request transaction
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
