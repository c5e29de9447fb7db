"""One replica's composition: RaftNode over its storage, the fleet state behind the change
feed, peer RPC through RaftRPCClient, the leader's telemetry coalescing, and the answers
clients get. A plain class: the Ray actor (actors.py) and the simulator (sim/) both run it,
each handing in its own storage, transport, clock and blocking-work runner.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from controlplane import fastjson
from controlplane.node import BlockingRunner, NodeStorage, RaftNode, run_in_thread, write_on_the_loop
from controlplane.raft import ConfChange, ConfChangeOp, NotLeaderError, RaftConfig, RaftError
from controlplane.raft.codec import decode_batch, encode_batch
from controlplane.raft.messages import AppendEntries, AppendEntriesResponse, Message, RequestVote, RequestVoteResponse
from controlplane.rpc.client import Peer, RaftRPCClient
from controlplane.rpc.config import RPCConfig
from controlplane.rpc.stats import StatsHook
from controlplane.rpc.transport import Transport
from controlplane.state.fleet import FleetState, validate
from controlplane.state.model import CommandError
from controlplane.state.queries import run_query
from controlplane.state.sessions import SESSION_TTL_ENTRIES
from controlplane.state.telemetry import check_segment, is_telemetry, join_segments
from controlplane.sync.changefeed import ChangeFeed
from controlplane.sync.coalescer import Coalescer, CoalescerConfig

# The leader's telemetry batching: entries of up to 16 MB of station segments, cut after
# 2 ms or when a send slot frees up (batches grow under load; see sync/coalescer.py).
LEADER_TELEMETRY = CoalescerConfig(max_size=16 << 20, max_delay=0.002, max_in_flight=2)
# The requests a peer may send as a call (the specification's request/response RPC face),
# and the answers Raft gives them.
CALL_ANSWERS: dict[type, tuple[type, ...]] = {
    RequestVote: (RequestVoteResponse,),
    AppendEntries: (AppendEntriesResponse,),
}
CALL_TIMEOUT = 2.0
MEMBERSHIP_OPS = {
    "add_learner": ConfChangeOp.ADD_LEARNER,
    "add_voter": ConfChangeOp.ADD_VOTER,
    "remove": ConfChangeOp.REMOVE,
}


@dataclass(frozen=True)
class ReplicaSettings:
    """How a replica behaves, whichever shell runs it."""

    tick_interval: float = 0.05
    election_ticks: int = 10
    # Replication shape (raft/core.py RaftConfig); the defaults suit fleets of any size.
    max_entries_per_msg: int = 512
    max_inflight_msgs: int = 64
    snapshot_chunk_bytes: int = 1 << 20
    compaction_keep: int = 128
    snapshot_every: int = 10_000
    snapshot_bytes: int = 256 << 20
    # Peer RPC: short timeouts and few retries, since Raft resends on its own.
    rpc: RPCConfig = field(default_factory=lambda: RPCConfig(timeout=0.5, max_retries=2, retry_delay=0.02))
    # Telemetry naming a UAV the fleet does not know: rejected (False) or registered at the
    # station that received it (True).
    auto_register_uavs: bool = False
    # The leader folds the telemetry tables of all stations into one log entry per batch.
    telemetry: CoalescerConfig = LEADER_TELEMETRY
    session_ttl_entries: int = SESSION_TTL_ENTRIES

    def __post_init__(self) -> None:
        if not self.tick_interval > 0:
            raise ValueError(f"tick_interval must be positive seconds, got {self.tick_interval}")
        self.raft_config(1)  # RaftConfig checks its fields: fail at configuration time
        if self.snapshot_every < 1 or self.snapshot_bytes < 1:
            raise ValueError("snapshot_every and snapshot_bytes must be positive")
        if self.session_ttl_entries < 1:
            raise ValueError(f"session_ttl_entries must be positive, got {self.session_ttl_entries}")

    def raft_config(self, node_id: int, seed: int = 0) -> RaftConfig:
        return RaftConfig(
            node_id=node_id,
            election_ticks=self.election_ticks,
            max_entries_per_msg=self.max_entries_per_msg,
            max_inflight_msgs=self.max_inflight_msgs,
            snapshot_chunk_bytes=self.snapshot_chunk_bytes,
            compaction_keep=self.compaction_keep,
            seed=seed,
        )


def check(command: bytes) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the command parsed, None) for a well-formed fleet command (types included,
    state/fleet.py validate), else (None, the answer refusing it). Telemetry does not come
    this way (Replica.submit_segments)."""
    try:
        if is_telemetry(command):
            raise CommandError("command", "telemetry goes through submit_segments, not as a command")
        return validate(fastjson.loads(command)), None
    except CommandError as exc:
        return None, _refused(exc.field, exc.reason)
    except (ValueError, TypeError):
        return None, _refused("command", "not a JSON object")


def _refused(field: str, error: str) -> dict[str, Any]:
    return {"ok": False, "field": field, "error": error, "conflict": False, "not_found": False}


class Replica:
    def __init__(
        self,
        node_id: int,
        storage: NodeStorage,
        transport: Transport,
        address_of: Callable[[int], str | None],
        settings: ReplicaSettings | None = None,
        *,
        seed: int = 0,
        hooks: Sequence[StatsHook] = (),
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        run_blocking: BlockingRunner = run_in_thread,
        run_small_write: BlockingRunner = write_on_the_loop,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.id = node_id
        self.settings = settings = settings or ReplicaSettings()
        self.state = FleetState(session_ttl_entries=settings.session_ttl_entries)
        self.feed = ChangeFeed(self.state)
        # (segment, its reports as checked): the leader applies what it checked, as for commands.
        self.telemetry: Coalescer[tuple[bytes, pa.Table]] = Coalescer(
            self._propose_telemetry, lambda checked: len(checked[0]), settings.telemetry
        )
        self.client = RaftRPCClient(node_id, transport, settings.rpc, hooks=hooks, rng=rng)
        self._address_of = address_of
        self._calls: list[tuple[int, tuple[type, ...], asyncio.Future[Message]]] = []
        # What metrics sample (metrics/replica.py): commands proposed and reads served so far,
        # and how long recent proposal rounds took from proposal to answer (seconds).
        self.proposed = 0
        self.reads_served = 0
        self.round_seconds: deque[float] = deque(maxlen=4096)
        self.node = RaftNode(
            settings.raft_config(node_id, seed),
            storage,
            self.feed,
            self._send,
            tick_interval=settings.tick_interval,
            snapshot_every=settings.snapshot_every,
            snapshot_bytes=settings.snapshot_bytes,
            sleep=sleep,
            run_blocking=run_blocking,
            run_small_write=run_small_write,
            on_failure=on_failure,
        )

    def _send(self, message: Message) -> None:
        for waiter in self._calls:
            caller, answers, answered = waiter
            if message.dst == caller and isinstance(message, answers) and not answered.done():
                answered.set_result(message)  # the answer goes back in the call's response
                self._calls.remove(waiter)
                return
        address = self._address_of(message.dst)
        if address is None:
            self.client.dropped += 1  # a member no one has told us where to find: Raft resends
            return
        self.client.post(Peer(message.dst, address), message)

    async def start(self) -> None:
        await self.node.start()

    async def stop(self) -> None:
        await self.node.stop()
        await self.client.close()

    # --- peers ------------------------------------------------------------------------------

    def deliver(self, body: bytes) -> None:
        """A batch of encoded Raft messages from a peer."""
        for m in decode_batch(body):
            self.node.receive(m)

    async def call(self, body: bytes, timeout: float = CALL_TIMEOUT) -> bytes:
        """A peer's request answered in the same exchange: the message goes to Raft like any
        other, and Raft's answer to its sender comes back here instead of over the network.
        ValueError for anything but one RequestVote or AppendEntries addressed to us."""
        messages = decode_batch(body)
        if len(messages) != 1:
            raise ValueError(f"a call carries exactly one message, got {len(messages)}")
        message = messages[0]
        answers = CALL_ANSWERS.get(type(message))
        if answers is None:
            raise ValueError(f"{type(message).__name__} is not answered by a call (only RequestVote, AppendEntries)")
        if message.dst != self.id:
            raise ValueError(f"the call is addressed to node {message.dst}; this is node {self.id}")
        waiter = (message.src, answers, asyncio.get_running_loop().create_future())
        self._calls.append(waiter)
        try:
            self.node.receive(message)
            answer = await asyncio.wait_for(waiter[2], timeout)
        finally:
            if waiter in self._calls:
                self._calls.remove(waiter)
        return encode_batch((answer,))

    # --- clients ----------------------------------------------------------------------------

    async def propose(self, command: bytes, timeout: float = 5.0) -> Any:
        return await self.node.propose(command, timeout)

    async def propose_many(self, commands: list[bytes], timeout: float = 5.0) -> list[tuple[str, Any]]:
        """Commands from many clients, proposed in one Raft round. Per command ("ok", the
        state machine's answer) or ("retry", why): not known to be applied here (not the
        leader, dropped by a newer term, timed out, failed); resend the same bytes, which
        the command's (client, seq) makes safe. A command that is not a valid fleet command
        is refused here, before the log, with the field and reason (nothing was applied)."""
        checks = [check(c) for c in commands]
        outcomes: list[Any] = [refused for _, refused in checks]
        valid = []
        for i, (parsed, _) in enumerate(checks):
            if parsed is not None:
                self.state.checked(commands[i], parsed)
                valid.append(i)
        loop = asyncio.get_running_loop()
        started = loop.time()
        proposed = await self.node.propose_many([commands[i] for i in valid], timeout)
        self.proposed += len(valid)
        if valid:
            self.round_seconds.append(loop.time() - started)
        for i, outcome in zip(valid, proposed, strict=True):
            outcomes[i] = outcome
        answers: list[tuple[str, Any]] = []
        for outcome in outcomes:
            if isinstance(outcome, RaftError | TimeoutError):
                answers.append(("retry", f"{type(outcome).__name__}: {outcome}"))
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                answers.append(("ok", outcome))
        return answers

    async def consistent(self, consistency: str) -> None:
        if consistency == "linearizable":
            await self.node.read_barrier()
        elif consistency != "stale":
            raise ValueError(f"consistency must be 'linearizable' or 'stale', got {consistency!r}")

    async def query(self, name: str, args: dict[str, Any] | None = None, consistency: str = "linearizable") -> Any:
        """A named fleet query (state/queries.py), after a ReadIndex barrier unless stale."""
        await self.consistent(consistency)
        self.reads_served += 1
        return run_query(self.state, name, args)

    async def query_many(
        self, queries: list[tuple[str, dict[str, Any] | None]], consistency: str = "linearizable"
    ) -> list[tuple[bool, Any]]:
        """Named queries from many clients after one ReadIndex barrier: per query (True,
        answer) or (False, its CommandError)."""
        await self.consistent(consistency)
        self.reads_served += len(queries)
        answers: list[tuple[bool, Any]] = []
        for name, args in queries:
            try:
                answers.append((True, run_query(self.state, name, args)))
            except CommandError as exc:
                answers.append((False, exc))
        return answers

    async def watch(self, from_index: int, kinds: list[str] | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """Changes after log index `from_index` (long poll up to `timeout`), or a reset."""
        return await self.feed.wait(from_index, kinds, timeout)

    def checkpoint_digests(self, index: int) -> dict[str, str] | None:
        """The table digests this replica computed when it applied checkpoint `index`."""
        return self.state.checkpoints.get(index)

    async def submit_segments(self, segments: list[bytes], timeout: float = 10.0) -> list[Any]:
        """Leader only: encoded telemetry segments (state/telemetry.py) from stations, joined
        with every other station's into few log entries. Each is checked first: a malformed
        segment is refused here and never reaches the log. Returns the apply counts of the
        entries they went in, once applied here."""
        if not self.node.is_leader:
            raise NotLeaderError(self.node.status().leader_id)
        checked = [(segment, check_segment(segment)) for segment in segments]
        return list(await asyncio.wait_for(asyncio.gather(*(self.telemetry.submit(c) for c in checked)), timeout))

    async def _propose_telemetry(self, checked: list[tuple[bytes, pa.Table]]) -> Any:
        entry = join_segments([segment for segment, _ in checked], auto_register=self.settings.auto_register_uavs)
        with self.state.telemetry_checked(entry, [reports for _, reports in checked]):
            return await self.node.propose(entry, timeout=10.0)

    def status(self) -> dict[str, Any]:
        s = self.node.status()
        return {
            "replica": self.id,
            "role": s.role.value,
            "term": s.term,
            "leader": s.leader_id,
            "commit": s.commit,
            "applied": self.node.applied_index,
            "voters": sorted(s.conf.voters),
            "learners": sorted(s.conf.learners),
            "match": s.match,
            "peers_heard": sorted(self.node.peers_heard),
            "uavs": len(self.state.uavs),
            "missions": len(self.state.missions),
        }

    async def change_membership(self, op: str, node_id: int, timeout: float = 10.0) -> None:
        """Leader only: op is add_learner, add_voter (promote) or remove."""
        if op not in MEMBERSHIP_OPS:
            raise ValueError(f"op must be one of {sorted(MEMBERSHIP_OPS)}, got {op!r}")
        await self.node.change_membership(ConfChange(MEMBERSHIP_OPS[op], node_id), timeout)
