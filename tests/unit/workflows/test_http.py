"""HTTP responses classified for retries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from convergent.errors import PermanentError, TransientError
from convergent.workflows.http import parse_retry_after, raise_for_status


@dataclass
class Response:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)


@pytest.mark.parametrize("code", [200, 201, 204, 304])
def test_success_and_redirect_statuses_pass(code: int) -> None:
    raise_for_status(Response(code))


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503, 504])
def test_timeouts_throttling_and_server_errors_are_transient(code: int) -> None:
    with pytest.raises(TransientError):
        raise_for_status(Response(code))


@pytest.mark.parametrize("code", [400, 401, 404, 409, 422])
def test_other_client_errors_are_permanent(code: int) -> None:
    with pytest.raises(PermanentError):
        raise_for_status(Response(code))


def test_retry_after_in_seconds_is_carried_on_the_error() -> None:
    with pytest.raises(TransientError) as caught:
        raise_for_status(Response(429, {"retry-after": "30"}))
    assert caught.value.retry_after == 30.0


def test_retry_after_as_an_http_date_becomes_seconds_from_now() -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Tue, 01 Jan 2030 12:01:00 GMT", now=now) == 60.0


def test_an_unparseable_retry_after_is_ignored() -> None:
    assert parse_retry_after("soon") is None
