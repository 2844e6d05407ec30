"""What the cluster tests run on a host (``ip netns exec``): one JSON line per answer.

Only the commands that need convergent import it: the rest start in a blink.

python hostclient.py write-and-publish DATABASE_URL BROKER_URL TOPIC
python hostclient.py publish BROKER_URL TOPIC COUNT TIMEOUT
python hostclient.py connect ADDRESS PORT TIMEOUT
python hostclient.py echo-server ADDRESS PORT          (TCP and UDP)
python hostclient.py rtt ADDRESS PORT ROUNDS           (again after each line on stdin)
python hostclient.py udp-loss ADDRESS PORT COUNT
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import sys
import threading
import time


def say(**answer: object) -> None:
    print(json.dumps(answer), flush=True)


async def write_and_publish(database_url: str, broker_url: str, topic: str) -> None:
    import sqlalchemy as sa

    from convergent.messages import Message
    from convergent.store import Store
    from convergent.transports.nats import NatsTransport

    store = Store(database_url)
    try:
        async with store.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE IF NOT EXISTS lab_rows (note text)"))
            await conn.execute(sa.text("INSERT INTO lab_rows VALUES ('from the client host')"))
    finally:
        await store.close()
    transport = NatsTransport(broker_url)
    try:
        [error] = await transport.publish([Message(topic, "k1", "lab.written", {"n": 1})])
    finally:
        await transport.close()
    say(written=True, published=error is None, error=repr(error))


async def publish(broker_url: str, topic: str, count: int, timeout: float) -> None:
    """Publish ``count`` messages, each retried until the broker takes it."""
    from convergent.messages import Message
    from convergent.transports.nats import NatsTransport

    began, deadline = time.monotonic(), time.monotonic() + timeout
    transport = NatsTransport(broker_url, publish_timeout=2)
    sent, errors = 0, []
    try:
        while sent < count and time.monotonic() < deadline:
            [error] = await transport.publish([Message(topic, f"k{sent}", "lab.n", {"n": sent})])
            if error is None:
                sent += 1
            else:
                errors.append(repr(error))
                await asyncio.sleep(0.2)
    finally:
        await transport.close()
    say(sent=sent, seconds=round(time.monotonic() - began, 2), errors=errors[-3:])


def connect(address: str, port: int, timeout: float) -> None:
    began = time.monotonic()
    try:
        socket.create_connection((address, port), timeout).close()
        outcome = "connected"
    except TimeoutError:
        outcome = "timeout"
    except OSError as exc:
        outcome = f"error: {exc}"
    say(outcome=outcome, seconds=round(time.monotonic() - began, 2))


def echo_server(address: str, port: int) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((address, port))

    def udp_echo() -> None:
        while True:
            data, peer = udp.recvfrom(2048)
            udp.sendto(data, peer)

    threading.Thread(target=udp_echo, daemon=True).start()
    server = socket.create_server((address, port))
    say(listening=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_tcp_echo, args=(conn,), daemon=True).start()


def _tcp_echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(2048):
            conn.sendall(data)


def rtt(address: str, port: int, rounds: int) -> None:
    """Median round trip (ms) over one connection, measured again after each line on stdin."""
    conn = socket.create_connection((address, port), 5)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        samples = []
        for _ in range(rounds):
            began = time.monotonic()
            conn.sendall(b"x")
            conn.recv(16)
            samples.append((time.monotonic() - began) * 1000)
        say(median_ms=round(statistics.median(samples), 2))
        if not sys.stdin.readline():
            return


def udp_loss(address: str, port: int, count: int) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(0.5)
    for n in range(count):
        udp.sendto(str(n).encode(), (address, port))
        time.sleep(0.001)
    answered = set()
    try:
        while True:
            answered.add(udp.recv(64))
    except TimeoutError:
        pass
    say(lost=round(1 - len(answered) / count, 3))


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "write-and-publish":
        asyncio.run(write_and_publish(*args))
    elif command == "publish":
        asyncio.run(publish(args[0], args[1], int(args[2]), float(args[3])))
    elif command == "connect":
        connect(args[0], int(args[1]), float(args[2]))
    elif command == "echo-server":
        echo_server(args[0], int(args[1]))
    elif command == "rtt":
        rtt(args[0], int(args[1]), int(args[2]))
    elif command == "udp-loss":
        udp_loss(args[0], int(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
