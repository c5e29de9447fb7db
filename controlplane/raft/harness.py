"""An in-process cluster of RaftCores with in-memory storage and a synchronous network, for
unit tests and the core benchmark. Messages are delivered in rounds until none are left;
links can be cut one way or both (etcd-io/raft's `network` with isolate/drop)."""

from __future__ import annotations

import struct
from collections.abc import Callable

from controlplane.raft.core import RaftConfig, RaftCore
from controlplane.raft.messages import EntryKind, Message, ReadState, Role, Snapshot, SnapshotMeta
from controlplane.raft.storage import MemoryStorage


def encode_items(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(x)) + x for x in items)


def decode_items(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


class Replica:
    """One member: its core, its stores and the list it applied (a trivial state machine)."""

    def __init__(self, config: RaftConfig, founders: list[int] | None) -> None:
        self.config = config
        self.storage = MemoryStorage()
        self.applied: list[bytes] = []
        self.read_states: list[ReadState] = []
        if founders:
            self.storage.bootstrap(founders)
        self.core = self._load()

    def _load(self) -> RaftCore:
        state = self.storage.load()
        kwargs = {} if state.snapshot is None else {"snapshot": state.snapshot}
        self.applied = [] if state.snapshot is None else decode_items(state.snapshot.data)
        return RaftCore(self.config, hard_state=state.hard_state, entries=state.entries, **kwargs)

    def restart(self) -> None:
        self.core = self._load()
        self.read_states = []

    def process(self) -> list[Message]:
        out: list[Message] = []
        while self.core.has_ready():
            rd = self.core.ready()
            self.storage.persist(rd)
            if rd.snapshot is not None:
                self.applied = decode_items(rd.snapshot.data)
            out.extend(rd.messages)
            for e in rd.committed_entries:
                if e.kind is EntryKind.NORMAL and e.data:
                    self.applied.append(e.data)
            self.read_states.extend(rd.read_states)
            self.core.advance(rd)
        return out

    def take_snapshot(self) -> Snapshot:
        core = self.core
        index = core.log.applied
        term = core.log.term(index)
        assert term is not None
        snap = Snapshot(SnapshotMeta(index, term, core.conf), encode_items(self.applied))
        core.compact(snap)
        self.storage.save_snapshot(snap)
        self.storage.compact_log(core.log.snap_index)
        return snap


class Network:
    def __init__(
        self,
        size: int,
        *,
        seed: int = 0,
        config: Callable[[int], RaftConfig] | None = None,
    ) -> None:
        make = config or (lambda nid: RaftConfig(node_id=nid, seed=seed))
        self.make_config = make
        founders = list(range(1, size + 1))
        self.replicas: dict[int, Replica] = {nid: Replica(make(nid), founders) for nid in founders}
        self.cut: set[tuple[int, int]] = set()
        self.drop_filter: Callable[[Message], bool] | None = None
        for r in self.replicas.values():
            r.process()

    def core(self, nid: int) -> RaftCore:
        return self.replicas[nid].core

    def add_replica(self, nid: int) -> Replica:
        r = Replica(self.make_config(nid), None)
        self.replicas[nid] = r
        return r

    def leader(self) -> int | None:
        leaders = [nid for nid, r in self.replicas.items() if r.core.role is Role.LEADER]
        return max(leaders, key=lambda n: self.replicas[n].core.term) if leaders else None

    def isolate(self, nid: int) -> None:
        for other in self.replicas:
            if other != nid:
                self.cut.add((nid, other))
                self.cut.add((other, nid))

    def heal(self) -> None:
        self.cut.clear()
        self.drop_filter = None

    def send(self, messages: list[Message]) -> None:
        """Deliver messages and everything they cause until the network is quiet."""
        pending = list(messages)
        rounds = 0
        while pending:
            rounds += 1
            if rounds > 10_000:
                raise RuntimeError("network did not settle")
            nxt: list[Message] = []
            for m in pending:
                if (m.src, m.dst) in self.cut or m.dst not in self.replicas:
                    continue
                if self.drop_filter is not None and self.drop_filter(m):
                    continue
                self.replicas[m.dst].core.step(m)
                nxt.extend(self.replicas[m.dst].process())
            pending = nxt

    def settle(self) -> None:
        msgs: list[Message] = []
        for r in self.replicas.values():
            msgs.extend(r.process())
        self.send(msgs)

    def tick(self, nid: int | None = None, times: int = 1) -> None:
        for _ in range(times):
            for n in [nid] if nid is not None else list(self.replicas):
                self.replicas[n].core.tick()
            self.settle()

    def heartbeat(self) -> None:
        """The leader's next heartbeat: how followers learn a commit no append has carried."""
        leader = self.leader()
        if leader is not None:
            self.tick(leader)

    def elect(self, nid: int) -> None:
        self.core(nid).campaign()
        self.settle()

    def propose(self, nid: int, data: bytes) -> None:
        self.core(nid).propose(data)
        self.settle()
