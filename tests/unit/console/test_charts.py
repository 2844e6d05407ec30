from datetime import UTC, datetime, timedelta

import pytest

from convergent.console.charts import Series, chart, nice_ceiling
from convergent.console.filters import ago, short
from convergent.console.queries.paging import decode_cursor, encode_cursor, id_floor
from convergent.errors import ConfigurationError
from convergent.ids import uuid7


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (0.3, 0.5), (7, 10), (10, 10), (11, 20), (4100, 5000)]
)
def test_axis_maximum_is_a_round_number_at_or_above_the_data(value: float, ceiling: float) -> None:
    assert nice_ceiling(value) == ceiling


def test_a_chart_labels_both_axes_escapes_text_and_leaves_gaps_for_missing_data() -> None:
    svg = str(
        chart(
            "Runs <b>",
            ["10:00", "10:02", "10:04"],
            [Series("p95", [1.0, None, 3.0])],
            y_label="seconds",
            x_label="time (UTC)",
            kind="lines",
        )
    )
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert ">seconds</text>" in svg
    assert ">time (UTC)</text>" in svg
    assert "Runs &lt;b&gt;" in svg
    assert svg.count("<circle") == 2  # two lone points, no line across the gap
    assert "<polyline" not in svg


def test_cursors_round_trip_and_a_forged_one_is_a_clear_error() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert decode_cursor(encode_cursor([at, "k"]), 2) == [at.isoformat(), "k"]
    with pytest.raises(ConfigurationError, match="first page"):
        decode_cursor("%%%", 1)
    with pytest.raises(ConfigurationError):
        decode_cursor(encode_cursor(["a"]), 2)


def test_id_floor_is_below_every_uuid7_made_at_or_after_that_time() -> None:
    now = datetime.now(UTC)
    assert id_floor(now - timedelta(milliseconds=2)) < uuid7() < id_floor(now + timedelta(hours=1))


def test_ages_and_shortening_read_like_a_person_would() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert ago(now - timedelta(seconds=90), now) == "2m ago"
    assert ago(now + timedelta(seconds=5), now) == "in 5s"
    assert short({"a": "x" * 100}, 10) == '{"a": "xx…'
