"""Simulated clients: each pipelines fleet commands through one ClientSession (the SDK's),
follows the leader, retries the same bytes after errors and lost answers, and reads back
linearizably, from leaders and followers. Every operation goes into a register history for
the linearizability checker (a UAV's altitude is the register), and every final answer is
kept for the exactly-once check ("no definite refusal of an applied command")."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from controlplane.raft.core import RaftError
from controlplane.replica import Replica
from controlplane.session import APPLIED, REFUSED, UNKNOWN, ClientSession, outcome
from controlplane.sim.linearizability import Operation
from controlplane.sim.loop import current_node
from controlplane.state.model import CommandError
from controlplane.state.telemetry import encode_segment, normalize

if TYPE_CHECKING:
    from controlplane.sim.world import Simulation


class Unreachable(Exception):
    """The request or its answer was lost, or the replica is down."""


@dataclass
class FinalAnswer:
    client: str
    seq: int
    outcome: str
    answer: dict[str, Any] | None


class Gateway:
    """One request and its answer between a client and a replica, over the simulated
    network. The replica's side runs as that replica's task: if it crashes, no answer."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    async def call(self, node_id: int, work: Callable[[Replica], Awaitable[Any]], timeout: float) -> Any:
        sim, net = self.sim, self.sim.network
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        there, back = net.delay(), net.delay()
        lost = net.rng.random() < net.faults.loss

        def arrive() -> None:
            node = sim.nodes.get(node_id)
            if node is None or not node.alive or node.replica is None:
                if not answer.done():
                    answer.set_exception(Unreachable(f"replica {node_id} is down"))
                return
            replica = node.replica
            ctx = contextvars.copy_context()
            ctx.run(current_node.set, (node.id, node.incarnation))

            async def serve() -> None:
                try:
                    result: Any = await work(replica)
                except (RaftError, TimeoutError, CommandError, ValueError) as exc:
                    result = exc
                if not (net.rng.random() < net.faults.loss):
                    loop.call_later(back, _settle, answer, result)

            sim.spawn_task(loop.create_task(serve(), context=ctx))

        if not lost:
            loop.call_later(there, arrive)
        try:
            result = await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            raise Unreachable(f"no answer from replica {node_id} within {timeout}s") from None
        if isinstance(result, BaseException):
            raise result
        return result


class SimClient:
    def __init__(self, sim: Simulation, index: int, pipeline: int, keys: list[str]) -> None:
        self.sim = sim
        self.index = index
        self.pipeline = pipeline
        self.keys = keys
        self.session = ClientSession()
        self.rng = random.Random(sim.rng.random())
        self.leader = 0
        self.completed = 0
        self.last_completed_at = 0.0

    async def run(self, stop_at: float) -> None:
        await asyncio.gather(*(self._worker(w, stop_at) for w in range(self.pipeline)))

    async def _worker(self, worker: int, stop_at: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.rng.uniform(0, 0.05))
        while loop.time() < stop_at:
            key = self.rng.choice(self.keys)
            if self.rng.random() < 0.55:
                await self.write(key, self.sim.next_value())
            else:
                await self.read(key)
            await asyncio.sleep(self.rng.uniform(0.001, 0.02))

    # --- operations -------------------------------------------------------------------------

    async def write(self, key: str, value: int) -> None:
        loop = asyncio.get_running_loop()
        op = Operation(self.index, key, "write", value, loop.time())
        self.sim.history.append(op)
        result, _ = await self.command({"type": "update_uav", "uav": key, "alt": float(value)})
        if result == APPLIED:
            op.ret = loop.time()
            self._completed()
        elif result == REFUSED:
            self.sim.history.remove(op)  # it did not happen (the exactly-once check holds us to that)

    async def command(self, command: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """Propose until answered or out of time: (APPLIED | REFUSED | UNKNOWN, the answer)."""
        try:
            await self.session.ensure_open(self._answer_of)
        except TimeoutError:
            return UNKNOWN, None  # no session: nothing of the command was sent
        seq, data = self.session.command(command)
        client = self.session.client_id
        assert client is not None
        answer = await self._propose(data)
        result = outcome(answer) if answer is not None else UNKNOWN
        self.session.done(seq, answer)
        self.sim.final_answers.append(FinalAnswer(client, seq, result, answer))
        return result, answer

    async def _answer_of(self, data: bytes) -> dict[str, Any]:
        answer = await self._propose(data)
        if answer is None:
            raise TimeoutError("no answer in time")
        return answer

    async def _propose(self, data: bytes) -> dict[str, Any] | None:
        """Send the same bytes to whoever leads until a replica answers; None if out of time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.sim.op_timeout
        while loop.time() < deadline:
            target = await self._target()
            try:
                [(kind, value)] = await self.sim.gateway.call(
                    target, lambda r: r.propose_many([data], timeout=self.sim.propose_timeout), self.sim.call_timeout
                )
            except (Unreachable, RaftError, TimeoutError):
                kind, value = "retry", None
            if kind == "ok":
                answer: dict[str, Any] = value
                return answer
            self.leader = 0
            await asyncio.sleep(self.rng.uniform(0.005, 0.03))
        return None

    async def read(self, key: str) -> None:
        loop = asyncio.get_running_loop()
        op = Operation(self.index, key, "read", None, loop.time())
        deadline = loop.time() + self.sim.op_timeout
        while loop.time() < deadline:
            # Reads go to leaders and to followers (a follower asks the leader for a ReadIndex).
            target = await self._target() if self.rng.random() < 0.7 else self.sim.random_live_node(self.rng)
            if not target:
                await asyncio.sleep(0.02)
                continue
            try:
                record = await self.sim.gateway.call(
                    target, lambda r: r.query("uav", {"id": key}), self.sim.call_timeout
                )
            except (Unreachable, RaftError, TimeoutError):
                self.leader = 0
                await asyncio.sleep(self.rng.uniform(0.005, 0.03))
                continue
            op.value = int(record["alt"])
            op.ret = loop.time()
            self.sim.history.append(op)
            self._completed()
            return

    def _completed(self) -> None:
        self.completed += 1
        self.last_completed_at = asyncio.get_running_loop().time()

    async def _target(self) -> int:
        """The leader as last heard of, else what a random replica says, else a guess."""
        if self.leader and self.sim.is_member(self.leader):
            return self.leader
        probe = self.sim.random_live_node(self.rng)
        if probe:
            try:
                status = await self.sim.gateway.call(probe, lambda r: _status(r), self.sim.call_timeout)
                hint = int(status["leader"])
                if hint and self.sim.is_member(hint):
                    self.leader = hint
                    return hint
            except (Unreachable, RaftError, TimeoutError):
                pass
        return probe or 1


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


async def _status(replica: Replica) -> dict[str, Any]:
    return replica.status()


async def telemetry_workload(sim: Simulation, stop_at: float) -> None:
    """A station's telemetry batches, about one in seven malformed, sent to the leader."""
    rng, loop = sim.rng, sim.loop
    seq = itertools.count(1)
    while loop.time() < stop_at:
        await asyncio.sleep(rng.uniform(5, 15) * sim.tick)
        reports = [
            {"uav": k, "time": loop.time(), "seq": next(seq), "lat": rng.uniform(-80, 80), "battery": 50.0}
            for k in sim.keys
        ]
        table, _ = normalize(reports, station="alpha")
        malformed = rng.random() < 0.15
        segment = _malformed_segment(table, rng) if malformed else encode_segment(table)
        leader = sim.leader()
        if leader is None:
            continue
        sim.stats.telemetry_batches += 1
        try:
            await sim.gateway.call(leader.id, _submitting(segment), sim.call_timeout)
        except ValueError:
            sim.stats.telemetry_refused += 1
        except (Unreachable, RaftError, TimeoutError, TypeError):
            pass


def _submitting(segment: bytes) -> Callable[[Replica], Coroutine[Any, Any, Any]]:
    return lambda replica: replica.submit_segments([segment])


def _malformed_segment(table: pa.Table, rng: random.Random) -> bytes:
    """A station's segment broken the ways a buggy or hostile station could: the uav column
    not dictionary-encoded (fine once normalised), or a column of the wrong type."""
    if rng.random() < 0.5:
        table = table.select([f.name for f in table.schema])
    else:
        i = table.schema.get_field_index("time")
        table = table.set_column(i, "time", pa.array([str(t) for t in table.column("time").to_pylist()]))
        i = table.schema.get_field_index("uav")
        table = table.set_column(i, "uav", table.column("uav").dictionary_encode())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data
