"""The simulated network: a Transport (rpc/transport.py) for the production RPC client.

A send takes a random delay; it may be lost (the sender times out), its answer may be lost
(delivered, yet the sender times out and retries: a duplicate), it may arrive after the
sender gave up (reordering), or be refused at once when nobody listens. Links can be cut
one way. Every choice comes from the simulation's seeded generator.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from controlplane.rpc.errors import RPCConnectionError, RPCTimeoutError

Deliver = Callable[[bytes], None]


@dataclass
class LinkFaults:
    loss: float = 0.0  # a request or its answer vanishes
    slow: float = 0.05  # a message takes 5-40 ms more (it overtakes nothing, others overtake it)
    min_delay: float = 0.0002
    max_delay: float = 0.003


def address(node_id: int) -> str:
    return f"sim://{node_id}"


class SimNetwork:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.faults = LinkFaults()
        self.cut: set[tuple[int, int]] = set()
        self._listeners: dict[int, Deliver] = {}
        self.messages = 0
        self.lost = 0

    def listen(self, node_id: int, deliver: Deliver) -> None:
        self._listeners[node_id] = deliver

    def unlisten(self, node_id: int) -> None:
        self._listeners.pop(node_id, None)

    def listening(self, node_id: int) -> bool:
        return node_id in self._listeners

    def transport(self, src: int) -> SimTransport:
        return SimTransport(self, src)

    def delay(self) -> float:
        f, rng = self.faults, self.rng
        d = rng.uniform(f.min_delay, f.max_delay)
        if rng.random() < f.slow:
            d += rng.uniform(0.005, 0.04)
        return d

    def passes(self, src: int, dst: int) -> bool:
        """One message from src to dst gets through (not cut, not lost)."""
        if (src, dst) in self.cut:
            return False
        if self.faults.loss and self.rng.random() < self.faults.loss:
            self.lost += 1
            return False
        return True

    def _deliver(self, dst: int, body: bytes) -> None:
        deliver = self._listeners.get(dst)
        if deliver is not None:
            deliver(body)


class SimTransport:
    def __init__(self, network: SimNetwork, src: int) -> None:
        self.network = network
        self.src = src

    async def send(self, address: str, body: bytes, timeout: float) -> int:
        net = self.network
        dst = int(address.removeprefix("sim://"))
        net.messages += 1
        there = net.delay()
        if not net.passes(self.src, dst):
            await asyncio.sleep(timeout)
            raise RPCTimeoutError(f"{address} did not answer within {timeout:.3f}s")
        if not net.listening(dst):
            await asyncio.sleep(min(there, timeout))
            raise RPCConnectionError(f"connection refused by {address}")
        loop = asyncio.get_running_loop()
        if there >= timeout:  # it arrives after the sender gave up
            loop.call_later(there, net._deliver, dst, body)
            await asyncio.sleep(timeout)
            raise RPCTimeoutError(f"{address} did not answer within {timeout:.3f}s")
        await asyncio.sleep(there)
        net._deliver(dst, body)
        back = net.delay()
        if not net.passes(dst, self.src) or there + back >= timeout:
            await asyncio.sleep(max(0.0, timeout - there))
            raise RPCTimeoutError(f"{address} did not answer within {timeout:.3f}s")
        await asyncio.sleep(back)
        return 0

    async def close(self) -> None:
        pass
