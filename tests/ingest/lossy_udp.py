"""A UDP relay on loopback that drops a share of the datagrams in each direction: a lossy
network between an SRT publisher and the SRT listener (one publisher at a time).

``with lossy_udp(("127.0.0.1", listener_port), loss=0.05) as link:`` publish to
``127.0.0.1:link.port``; ``link.dropped`` / ``link.forwarded`` count what happened. The drops
come from a seeded random generator: the same run drops the same datagrams."""

from __future__ import annotations

import random
import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class LossyLink:
    port: int
    loss: float
    dropped: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    forwarded: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})


@contextmanager
def lossy_udp(target: tuple[str, int], *, loss: float, seed: int = 7) -> Iterator[LossyLink]:
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(("127.0.0.1", 0))
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back.bind(("127.0.0.1", 0))
    back.connect(target)
    link = LossyLink(front.getsockname()[1], loss)
    rng = random.Random(seed)
    stop = threading.Event()
    client: list[tuple[str, int]] = []

    def pump() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([front, back], [], [], 0.2)
            for sock in ready:
                data, sender = sock.recvfrom(65536)
                up = sock is front
                if up and (not client or client[0] != sender):
                    client[:] = [sender]  # the publisher (a new one replaces the last)
                way = "up" if up else "down"
                if rng.random() < loss:
                    link.dropped[way] += 1
                    continue
                link.forwarded[way] += 1
                if up:
                    back.send(data)
                elif client:
                    front.sendto(data, client[0])

    thread = threading.Thread(target=pump, name="lossy-udp", daemon=True)
    thread.start()
    try:
        yield link
    finally:
        stop.set()
        thread.join(timeout=5)
        front.close()
        back.close()
