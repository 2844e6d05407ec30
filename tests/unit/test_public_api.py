import convergent


def test_public_api_is_exactly_what_all_lists() -> None:
    exported = set(convergent.__all__)
    assert exported == {name for name in exported if hasattr(convergent, name)}
    assert {"Store", "RetryPolicy", "Message", "ManualClock", "fault_point", "uuid7"} <= exported
