"""Hostile input against a real `convergent serve`: never a 500, every error is problem+json.

Each case once on SQLite and once on PostgreSQL (which rejects NUL in text outright): the answers
must be the same, decided at validation before any database sees the input.
"""

from __future__ import annotations

import httpx

from tests.acceptance.conftest import Server

PROBLEM = "application/problem+json"
ORDER = {
    "customer_id": "c1",
    "items": [{"sku": "A", "qty": 1}],
    "amount": "1.00",
    "currency": "EUR",
}


def assert_problem(answer: httpx.Response, status: int) -> dict[str, object]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM, answer.headers
    body: dict[str, object] = answer.json()
    assert body["status"] == status
    assert str(body["type"]).startswith("https://convergent.dev/problems/")
    return body


def order_headers(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def deep(levels: int) -> str:
    return '{"customer_id": "c", "items": ' + "[" * levels + "]" * levels + "}"


# each case is (method, path, JSON body or None); one server per database answers them all
UNSTORABLE = [
    ("PUT", "/customers/c1", '{"name": "Ada\\u0000", "email": "a@x.io"}'),
    ("PUT", "/customers/c1", '{"name\\u0000": "Ada", "email": "a@x.io"}'),
    ("PUT", "/customers/c1", '{"name": "Ada\\ud800", "email": "a@x.io"}'),
    ("POST", "/webhooks/endpoints", '{"url": "https://example.com/\\u0000"}'),
    (
        "POST",
        "/trading/fills",
        '{"client_order_id": "o\\u0000", "fill_id": "f", "qty": 1, "price": "1"}',
    ),
    ("PUT", "/customers/" + "x" * 256, '{"name": "Ada", "email": "a@x.io"}'),
    ("PUT", "/customers/c%00", '{"name": "Ada", "email": "a@x.io"}'),
    ("GET", "/customers/c%00", None),
    ("GET", "/orders/x%00y", None),
    ("GET", "/webhooks/endpoints?x=%00", None),
    ("POST", "/webhooks/endpoints", '{"url": "http://[::1/hook"}'),
    ("POST", "/webhooks/endpoints", '{"url": "https://user:pw@93.184.215.14/hook"}'),
    ("POST", "/webhooks/endpoints", '{"url": "http://[64:ff9b::a00:1]/hook"}'),
    ("POST", "/webhooks/endpoints", '{"url": "http://example.com:99999/"}'),
    (
        "POST",
        "/trading/fills",
        '{"client_order_id": "nope", "fill_id": "f1", "qty": 1, "price": "1"}',
    ),
    ("PUT", "/customers/c1", deep(40)),
    ("PUT", "/customers/c1", deep(5000)),
]


def test_hostile_input_gets_problems_never_a_500(server: Server) -> None:
    with server.client() as http:
        for method, path, body in UNSTORABLE:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            answer = http.request(method, path, content=body, headers=headers)
            assert_problem(answer, 422)
        deeply_nested_orders_are_422(http)
        a_nul_in_an_order_is_refused_and_the_key_stays_free(http)
        unknown_routes_and_methods_are_problems(http)
        bodies_that_are_not_json_are_415_and_broken_json_400(http)


def deeply_nested_orders_are_422(http: httpx.Client) -> None:
    for levels in (40, 100_000):
        answer = http.post(
            "/orders",
            content=deep(levels),
            headers={**order_headers(f"deep-{levels}"), "Content-Type": "application/json"},
        )
        assert_problem(answer, 422)


def a_nul_in_an_order_is_refused_and_the_key_stays_free(http: httpx.Client) -> None:
    bad = http.post("/orders", json={**ORDER, "customer_id": "c\x00"}, headers=order_headers("k1"))
    assert_problem(bad, 422)
    good = http.post("/orders", json=ORDER, headers=order_headers("k1"))
    assert good.status_code == 202, good.text


def unknown_routes_and_methods_are_problems(http: httpx.Client) -> None:
    assert_problem(http.get("/no/such/route"), 404)
    answer = http.delete("/orders")
    assert_problem(answer, 405)
    assert answer.headers["allow"] == "POST"


def test_bodies_over_the_limit_are_413_on_every_route(start_server: object) -> None:
    server = start_server(env={"CONVERGENT_HTTP_MAX_BODY": "1000"})  # type: ignore[operator]
    big = {"name": "x" * 2000, "email": "a@x.io"}
    with server.client() as http:
        assert_problem(http.put("/customers/c1", json=big), 413)
        assert_problem(
            http.post(
                "/orders", json={**ORDER, "customer_id": "x" * 2000}, headers=order_headers("big")
            ),
            413,
        )
        chunks = (b"x" * 500 for _ in range(4))  # no Content-Length: counted as it streams
        streamed = http.put(
            "/customers/c1", content=chunks, headers={"Content-Type": "application/json"}
        )
        assert_problem(streamed, 413)
        assert http.put("/customers/c1", json={"name": "Ada", "email": "a@x.io"}).status_code == 200


def bodies_that_are_not_json_are_415_and_broken_json_400(http: httpx.Client) -> None:
    text = http.put("/customers/c1", content=b"name=Ada", headers={"Content-Type": "text/plain"})
    assert_problem(text, 415)
    form = http.post(
        "/orders",
        content=b"a=1",
        headers={**order_headers("form"), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(form, 415)
    broken = http.put(
        "/customers/c1", content=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    assert_problem(broken, 400)
    nan = http.put(
        "/customers/c1", content=b'{"name": NaN}', headers={"Content-Type": "application/json"}
    )
    assert_problem(nan, 400)
    huge = http.put(
        "/customers/c1",
        content=b'{"name": ' + b"9" * 5000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert_problem(huge, 400)
