import convergent


def test_public_api_is_exactly_what_all_lists() -> None:
    exported = set(convergent.__all__)
    assert exported == {name for name in exported if hasattr(convergent, name)}
    assert {"Store", "RetryPolicy", "Message", "ManualClock", "fault_point", "uuid7"} <= exported
    assert {
        "workflow",
        "step",
        "Saga",
        "start",
        "emit",
        "declare_topic",
        "StateMachine",
    } <= exported


def test_importing_the_package_does_not_import_the_shop_or_the_brokers() -> None:
    import subprocess
    import sys

    code = (
        "import sys, convergent; "
        "heavy = ('convergent_shop', 'nats', 'aiokafka', 'fastapi'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
