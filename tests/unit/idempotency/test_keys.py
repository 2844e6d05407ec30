from __future__ import annotations

import pytest

from convergent.errors import IdempotencyKeyMissing, InvalidIdempotencyKey
from convergent.idempotency.keys import InvalidBody, fingerprint, parse_key


@pytest.mark.parametrize(
    ("header", "key"),
    [("abc", "abc"), ('"abc"', "abc"), (' "a\\"b\\\\c" ', 'a"b\\c'), ("x" * 255, "x" * 255)],
)
def test_a_valid_header_gives_its_key(header: str, key: str) -> None:
    assert parse_key([header]) == key


@pytest.mark.parametrize(
    "header", ["", '""', '"abc', '"a"b"', '"a\\nb"', "x" * 256, "caf\u00e9", "tab\there"]
)
def test_a_malformed_header_is_refused(header: str) -> None:
    with pytest.raises(InvalidIdempotencyKey):
        parse_key([header])


def test_no_header_means_the_key_is_missing() -> None:
    with pytest.raises(IdempotencyKeyMissing):
        parse_key([])


def test_two_headers_are_refused() -> None:
    with pytest.raises(InvalidIdempotencyKey):
        parse_key(["a", "b"])


def test_json_bodies_equal_as_values_have_one_fingerprint() -> None:
    ct = "application/json"
    assert fingerprint("POST", "/o", ct, b'{"a":1,"b":[1,2]}') == fingerprint(
        "post", "/o", ct, b'{ "b": [1, 2],\n "a": 1 }'
    )


@pytest.mark.parametrize(
    ("method", "target", "body"),
    [("PUT", "/o", b'{"a":1}'), ("POST", "/p", b'{"a":1}'), ("POST", "/o", b'{"a":2}')],
)
def test_method_path_and_body_each_change_the_fingerprint(
    method: str, target: str, body: bytes
) -> None:
    base = fingerprint("POST", "/o", "application/json", b'{"a":1}')
    assert fingerprint(method, target, "application/json", body) != base


def test_invalid_json_has_no_fingerprint() -> None:
    with pytest.raises(InvalidBody):
        fingerprint("POST", "/o", "application/json; charset=utf-8", b"{nope")


def test_a_non_json_body_is_fingerprinted_as_bytes() -> None:
    assert fingerprint("POST", "/o", "text/plain", b"{nope") != fingerprint(
        "POST", "/o", "text/plain", b"{nope "
    )


def test_the_fingerprint_never_changes_between_versions() -> None:
    # keys stored by an earlier version must still match their retries after an upgrade
    assert fingerprint("post", "/a?x=1", "application/json", b'{"b":1,"a":[1,2]}') == (
        "b2d3d45127cd1055e8ac548328be1690474cb33edaf581149a5586d11929d96b"
    )
    assert (
        fingerprint("PUT", "/", "text/plain", b"raw")
        == "ff2ed66ec1beb5581e127fd49a68b20f0d409351be9c508aa325eee9a5ca6d48"
    )
