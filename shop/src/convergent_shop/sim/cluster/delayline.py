"""A userspace delay line, for kernels without ``sch_netem``: latency and loss on a host's egress.

Run inside the host's namespace. The host routes the shaped peers through the tun device
``--dev``; each IPv4 packet read from it is dropped with probability ``--loss`` or sent on after
``--delay-ms`` through a raw socket whose mark selects a routing table that points at ``eth0``
(so it does not come back into the tun). Order is kept: every packet waits the same time.

``python -P delayline.py --dev cvdelay --delay-ms 50 --loss 0.01`` (stdlib only: run by path, it
starts without importing convergent)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import random
import socket
import struct

__all__ = ["MARK", "main"]

MARK = 0x7701
_TUNSETIFF = 0x400454CA
_IFF_TUN, _IFF_NO_PI = 0x0001, 0x1000


def _open_tun(dev: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", dev.encode(), _IFF_TUN | _IFF_NO_PI))
    return fd


def _raw_socket(mark: int) -> socket.socket:
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    raw.setblocking(False)
    return raw


def _send(raw: socket.socket, packet: bytes) -> None:
    # a full send buffer or a link that went down loses the packet, as a wire would
    with contextlib.suppress(OSError):
        raw.sendto(packet, (socket.inet_ntoa(packet[16:20]), 0))


async def _serve(dev: str, delay: float, loss: float, mark: int, seed: int | None) -> None:
    loop = asyncio.get_running_loop()
    fd, raw, rng = _open_tun(dev), _raw_socket(mark), random.Random(seed)

    def readable() -> None:
        while True:
            try:
                packet = os.read(fd, 65535)
            except BlockingIOError:
                return
            if packet[:1] and packet[0] >> 4 == 4 and rng.random() >= loss:
                loop.call_later(delay, _send, raw, packet)

    loop.add_reader(fd, readable)
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="latency and loss on a tun device")
    parser.add_argument("--dev", required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--mark", type=lambda v: int(v, 0), default=MARK)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    asyncio.run(_serve(args.dev, args.delay_ms / 1000, args.loss, args.mark, args.seed))


if __name__ == "__main__":
    main()
