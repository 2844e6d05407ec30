"""The NATS fast path's HPUB frames: what nats-py would write, or None to let nats-py decide."""

from __future__ import annotations

from convergent.transports.nats import _frame


def test_a_frame_is_an_hpub_command_with_headers_and_body() -> None:
    frame = _frame("orders.o1", "_INBOX.x.7", {"ce-id": "1", "Nats-Msg-Id": "1"}, b"{}", 1024)
    head = b"NATS/1.0\r\nce-id: 1\r\nNats-Msg-Id: 1\r\n\r\n"
    assert frame == b"HPUB orders.o1 _INBOX.x.7 %d %d\r\n%s{}\r\n" % (
        len(head),
        len(head) + 2,
        head,
    )


def test_newlines_in_header_values_cannot_inject_protocol_lines() -> None:
    frame = _frame("t.k", "r.1", {"ce-type": "a\r\nPUB evil 0\r\n"}, b"", 1024)
    assert frame is not None
    assert b"ce-type: a  PUB evil 0\r\n\r\n" in frame


def test_odd_subjects_keys_and_sizes_go_through_the_client() -> None:
    assert _frame("topic with space.k", "r.1", {}, b"", 1024) is None
    assert _frame("t.k", "r.1", {"bad key:": "v"}, b"", 1024) is None
    assert _frame("t.k", "r.1", {}, b"x" * 11, 10) is None  # too large (or not connected: 0)
