"""Prefer header parsing (RFC 7240) and the 202 headers."""

from __future__ import annotations

from starlette.requests import Request

from convergent.http.prefer import (
    accepted_headers,
    parse_prefer,
    preference_applied,
    requested_wait,
)


def request_with(*prefer: str) -> Request:
    headers = [(b"prefer", value.encode()) for value in prefer]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers})


def test_parse_prefer_reads_tokens_values_and_ignores_parameters() -> None:
    assert parse_prefer(['respond-async, wait=10; foo="bar"', "wait=3"]) == {
        "respond-async": None,
        "wait": "10",
    }


def test_requested_wait_is_capped_by_the_route_limit() -> None:
    assert requested_wait(request_with("wait=30"), limit=5) == 5
    assert requested_wait(request_with("wait=2"), limit=5) == 2


def test_no_or_malformed_wait_means_no_preference() -> None:
    assert requested_wait(request_with(), limit=5) is None
    assert requested_wait(request_with("wait=soon"), limit=5) is None
    assert requested_wait(request_with("wait=-1"), limit=5) is None


def test_preference_applied_and_accepted_headers() -> None:
    assert preference_applied(2.2) == {"Preference-Applied": "wait=3"}
    assert accepted_headers("/bookings/a", 0.2) == {"Location": "/bookings/a", "Retry-After": "1"}
