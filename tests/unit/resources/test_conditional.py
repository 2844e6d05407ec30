"""Precondition evaluation (RFC 9110 §13.2.2), one case per test."""

from __future__ import annotations

import pytest

from convergent.errors import PreconditionFailed, PreconditionRequired
from convergent.http.conditional import Evaluation, etag, evaluate, parse_etags


def test_the_etag_is_the_version_as_a_strong_validator() -> None:
    assert etag(3) == '"3"'


def test_parse_etags_reads_lists_and_star() -> None:
    assert parse_etags('"1", W/"2"') == ['"1"', 'W/"2"']
    assert parse_etags(" * ") is None


def test_a_matching_if_match_conditions_the_write_on_that_version() -> None:
    assert evaluate("PATCH", 4, if_match='"4"') == Evaluation(expected_version=4)


def test_if_match_with_one_of_several_tags_matching_holds() -> None:
    assert evaluate("PATCH", 4, if_match='"3", "4"').expected_version == 4


def test_a_stale_if_match_fails() -> None:
    with pytest.raises(PreconditionFailed):
        evaluate("PATCH", 4, if_match='"3"')


def test_a_weak_tag_never_satisfies_if_match() -> None:
    with pytest.raises(PreconditionFailed):
        evaluate("PATCH", 4, if_match='W/"4"')


def test_if_match_star_needs_an_existing_resource() -> None:
    assert evaluate("PUT", 1, if_match="*") == Evaluation()
    with pytest.raises(PreconditionFailed):
        evaluate("PUT", None, if_match="*")


def test_a_required_if_match_that_is_missing_is_428() -> None:
    with pytest.raises(PreconditionRequired):
        evaluate("PATCH", 4, require_if_match=True)


def test_428_is_decided_before_anything_else() -> None:
    with pytest.raises(PreconditionRequired):
        evaluate("POST", None, if_none_match="*", require_if_match=True)


def test_if_none_match_star_creates_once() -> None:
    assert evaluate("PUT", None, if_none_match="*") == Evaluation()
    with pytest.raises(PreconditionFailed):
        evaluate("PUT", 1, if_none_match="*")


def test_if_none_match_on_a_read_answers_not_modified() -> None:
    assert evaluate("GET", 2, if_none_match='W/"2"').not_modified
    assert not evaluate("GET", 3, if_none_match='"2"').not_modified


def test_if_match_is_evaluated_before_if_none_match() -> None:
    with pytest.raises(PreconditionFailed, match="changed"):
        evaluate("PUT", 2, if_match='"1"', if_none_match='"2"')


def test_no_preconditions_means_proceed_unconditionally() -> None:
    assert evaluate("DELETE", 9) == Evaluation()
