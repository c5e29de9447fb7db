"""RaftNode, the asyncio driver, on an in-memory network through the real RPC client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from controlplane import bugs
from controlplane.node import NodeFailed
from controlplane.persist import DiskStorage
from controlplane.raft import NotLeaderError
from controlplane.raft.messages import ConfChange, ConfChangeOp
from tests.node_cluster import KV, Cluster, wait_for


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 60))


def test_writes_replicate_and_the_leader_answers_with_the_result():
    async def go():
        c = Cluster(3)
        for i in c.ids:
            await c.start(i)
        try:
            leader = await c.leader()
            results = await asyncio.gather(*(leader.propose(b"k%d=v%d" % (i, i)) for i in range(50)))
            assert results == sorted(results) and len(set(results)) == 50  # log indices, in order
            await wait_for(lambda: all(len(kv.data) == 50 for kv in c.kvs.values()))
        finally:
            await c.close()

    run(go())


def test_follower_refuses_with_a_leader_hint_and_serves_linearizable_reads():
    async def go():
        c = Cluster(3)
        for i in c.ids:
            await c.start(i)
        try:
            leader = await c.leader()
            follower = next(n for n in c.nodes.values() if n is not leader)
            await wait_for(lambda: follower.status().leader_id == leader.id)
            with pytest.raises(NotLeaderError) as info:
                await follower.propose(b"x=1")
            assert info.value.leader_hint == leader.id
            await leader.propose(b"x=2")
            await follower.read_barrier()
            assert c.kvs[follower.id].data["x"] == "2"
        finally:
            await c.close()

    run(go())


def test_leader_killed_new_leader_keeps_every_acknowledged_write():
    async def go():
        c = Cluster(3)
        for i in c.ids:
            await c.start(i)
        try:
            old = await c.leader()
            for i in range(20):
                await old.propose(b"a%d=%d" % (i, i))
            await c.stop(old.id)
            new = await c.leader()
            assert new.id != old.id
            await new.propose(b"after=1")
            assert all(f"a{i}" in c.kvs[new.id].data for i in range(20))
            # The old leader restarts from its storage and catches up.
            await c.start(old.id)
            await wait_for(lambda: c.kvs[old.id].data.get("after") == "1")
        finally:
            await c.close()

    run(go())


def test_snapshots_compact_and_a_restarted_node_recovers_from_disk(tmp_path):
    async def go():
        c = Cluster(3, snapshot_every=25)
        disks = {}
        for i in c.ids:
            disk = DiskStorage(tmp_path / f"n{i}", cluster="t", node_id=i)
            disk.bootstrap(c.ids)
            disks[i] = disk
            await c.start(i, storage=disk)
        try:
            leader = await c.leader()
            for i in range(60):
                await leader.propose(b"k%d=%d" % (i, i))
            victim = next(i for i in c.ids if i != leader.id)
            await wait_for(lambda: len(c.kvs[victim].data) == 60)
            await c.stop(victim)
            for i in range(60, 80):
                await leader.propose(b"k%d=%d" % (i, i))
            restarted = await c.start(victim, storage=DiskStorage(tmp_path / f"n{victim}", cluster="t", node_id=victim))
            assert restarted.applied_index >= 50  # state came back from its own snapshot
            await wait_for(lambda: len(c.kvs[victim].data) == 80)
            assert list((tmp_path / f"n{leader.id}" / "snap").glob("snapshot-*"))
        finally:
            await c.close()

    run(go())


class KVEncodedWhenLet(KV):
    """Captures its snapshot at once; encodes it when the test lets it."""

    def __init__(self) -> None:
        super().__init__()
        self.encoding = threading.Event()
        self.let = threading.Event()

    def prepare_snapshot(self) -> Callable[[], bytes]:
        captured = self.snapshot()

        def encode() -> bytes:
            self.encoding.set()
            if not self.let.wait(30):
                raise TimeoutError("the test never let the snapshot be encoded")
            return captured

        return encode


def test_applies_go_on_while_a_snapshot_is_encoded_and_saved(tmp_path):
    async def go():
        c = Cluster(3, snapshot_every=20, state_machine=KVEncodedWhenLet)
        for i in c.ids:
            disk = DiskStorage(tmp_path / f"n{i}", cluster="t", node_id=i)
            disk.bootstrap(c.ids)
            await c.start(i, storage=disk)
        try:
            leader = await c.leader()
            kv = c.kvs[leader.id]
            index_of = {}
            for i in range(20):
                index_of[f"k{i}"] = await leader.propose(b"k%d=%d" % (i, i))
            await wait_for(kv.encoding.is_set)
            # Its snapshot is being encoded: writes still commit and apply (they waited for
            # the whole write before).
            for i in range(20, 30):
                index_of[f"k{i}"] = await leader.propose(b"k%d=%d" % (i, i), timeout=5)
            assert len(kv.data) == 30
            for other in c.kvs.values():
                other.let.set()
            await wait_for(lambda: leader.core is not None and leader.core.log.snapshot.meta.index > 0)
            snapshot = leader.core.log.snapshot
            saved = KV()
            saved.restore(snapshot.data)
            # The state at the snapshot's index, nothing applied after it.
            assert saved.data == {k: k[1:] for k, index in index_of.items() if index <= snapshot.meta.index}
            assert len(saved.data) < 30
        finally:
            for other in c.kvs.values():
                other.let.set()
            await c.close()

    run(go())


def test_large_entries_trigger_a_snapshot_by_bytes():
    async def go():
        c = Cluster(3, snapshot_bytes=64 << 10)
        for i in c.ids:
            await c.start(i)
        try:
            leader = await c.leader()
            for i in range(4):
                await leader.propose(b"big%d=" % i + b"x" * (30 << 10))
            await wait_for(lambda: leader.core is not None and leader.core.log.snapshot.meta.index > 0)
            assert (
                leader.core is not None and leader.core.log.snapshot.meta.index <= 8
            )  # 8 entries in all: by bytes, not by count (10,000)
        finally:
            await c.close()

    run(go())


def test_a_deposed_leader_answers_waiting_proposals_at_once():
    async def go():
        c = Cluster(3)
        for i in c.ids:
            await c.start(i)
        try:
            leader = await c.leader()
            for other in c.ids:
                if other != leader.id:
                    c.net.down.add(f"mem://{other}")  # the leader reaches no one: check-quorum deposes it
            started = asyncio.get_running_loop().time()
            with pytest.raises(NotLeaderError):
                await leader.propose(b"lost=1", timeout=10)
            assert asyncio.get_running_loop().time() - started < 3  # not the 10 s proposal timeout
        finally:
            await c.close()

    run(go())


def test_commands_proposed_together_answer_each_on_its_own():
    async def go():
        c = Cluster(3)
        for i in c.ids:
            await c.start(i)
        try:
            leader = await c.leader()
            results = await leader.propose_many([b"m%d=%d" % (i, i) for i in range(20)])
            assert results == sorted(results) and len(set(results)) == 20  # log indices, in order
            assert await leader.propose_many([]) == []
            follower = next(n for n in c.nodes.values() if n is not leader)
            await wait_for(lambda: follower.status().leader_id == leader.id)
            refused = await follower.propose_many([b"a=1", b"b=2"])
            assert [type(r) for r in refused] == [NotLeaderError, NotLeaderError]
            for other in c.ids:
                if other != leader.id:
                    c.net.down.add(f"mem://{other}")  # no quorum: nothing commits
            late = await leader.propose_many([b"late=1", b"late=2"], timeout=0.2)
            # Each told it is not known to have applied: timed out, or (check-quorum deposing
            # the leader within 1-2 election timeouts, 0.1-0.2 s at these ticks) not the leader.
            assert len(late) == 2 and all(isinstance(r, TimeoutError | NotLeaderError) for r in late), late
            assert "late" not in c.kvs[leader.id].data
        finally:
            await c.close()

    run(go())


class FailingStorage:
    """Memory storage whose next fsync fails once `armed` (a disk that stops working)."""

    def __init__(self, inner):
        self.inner = inner
        self.armed = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def persist(self, rd):
        if self.armed and rd.must_sync():
            raise OSError(5, "injected EIO")
        self.inner.persist(rd)


def test_a_failed_raft_loop_takes_the_node_down_instead_of_leaving_a_zombie_leader():
    """Defect 4: the loop died and the frozen core went on answering status as the leader."""

    async def go(zombie: bool):
        c = Cluster(3)
        failures = []
        for i in c.ids:
            await c.start(i, storage=FailingStorage(c.storage[i]))
        try:
            leader = await c.leader()
            leader.storage.armed = True
            leader._on_failure = failures.append
            with pytest.raises((NodeFailed, TimeoutError)):
                await leader.propose(b"x=1", timeout=2)
            if zombie:
                assert leader.is_leader and leader.status().leader_id == leader.id  # the defect
                return
            assert failures and isinstance(failures[0], OSError)
            assert not leader.is_leader
            with pytest.raises(NodeFailed):
                leader.status()
            started = asyncio.get_running_loop().time()
            with pytest.raises(NodeFailed):
                await leader.propose(b"y=1", timeout=10)
            assert asyncio.get_running_loop().time() - started < 1  # at once, not after a timeout
            others = [n for n in c.nodes.values() if n is not leader]
            await wait_for(lambda: any(n.is_leader for n in others), timeout=10)
        finally:
            await c.close()

    run(go(zombie=False))
    with bugs.switched_on("zombie_leader"):
        run(go(zombie=True))


def test_a_membership_change_given_up_before_the_loop_takes_it_does_not_kill_the_loop():
    """Found by the simulator: the loop answered a cancelled future and died of it."""

    async def go():
        c = Cluster(3)
        for i in c.ids:
            await c.start(i)
        try:
            leader = await c.leader()
            follower = next(n for n in c.nodes.values() if n is not leader)
            with pytest.raises(TimeoutError):
                await follower.change_membership(ConfChange(ConfChangeOp.ADD_LEARNER, 9), timeout=0)
            await asyncio.sleep(0.05)  # the loop takes the abandoned request in
            assert follower.failure is None
            await follower.read_barrier()  # still serving
        finally:
            await c.close()

    run(go())


def test_small_wal_writes_take_the_small_runner_and_large_ones_the_blocking_one():
    from controlplane.node import SMALL_WRITE_BYTES, RaftNode, run_inline
    from controlplane.raft import RaftConfig
    from tests.node_cluster import KV, founder_storage

    async def go():
        ran: list[str] = []

        def runner(name):
            async def run_it(fn):
                ran.append(name)
                return await run_inline(fn)

            return run_it

        node = RaftNode(
            RaftConfig(node_id=1, seed=1),
            founder_storage([1]),
            KV(),
            lambda m: None,
            tick_interval=0.01,
            run_blocking=runner("blocking"),
            run_small_write=runner("small"),
        )
        await node.start()
        try:
            await wait_for(lambda: node.is_leader)
            ran.clear()
            await node.propose(b"a=1")
            small, ran[:] = list(ran), []
            await node.propose(b"b=" + b"x" * (SMALL_WRITE_BYTES + 1))
            large = list(ran)
        finally:
            await node.stop()
        assert "small" in small and "blocking" not in small
        assert "blocking" in large

    run(go())


def test_a_starting_node_campaigns_a_heartbeat_and_a_tick_short_of_a_whole_election_timeout():
    """etcd's initial election tick advance: a group starting or restarting at once elects
    within a few ticks instead of waiting out a randomized timeout of 10-19 ticks first."""
    from controlplane.node import RaftNode, run_inline
    from controlplane.raft import RaftConfig
    from controlplane.raft.messages import HardState, RequestVote
    from tests.node_cluster import KV, founder_storage

    config_ticks, heartbeat_ticks = 10, 1

    async def ticks_before_first_campaign(seed: int, term: int) -> int:
        released = asyncio.Semaphore(0)
        taken = 0

        async def one_tick(_interval: float) -> None:
            nonlocal taken
            await released.acquire()
            taken += 1

        storage = founder_storage([1, 2, 3])  # term 1: a first start
        storage.stable.save(HardState(term=term, vote=0, commit=3))
        sent: list[object] = []
        node = RaftNode(
            RaftConfig(node_id=1, seed=seed, election_ticks=config_ticks, heartbeat_ticks=heartbeat_ticks),
            storage,
            KV(),
            sent.append,
            sleep=one_tick,
            run_blocking=run_inline,
        )
        await node.start()
        try:
            for ticks in range(1, 3 * config_ticks):
                released.release()
                for _ in range(100):  # the ticker, then the Raft loop, take their turns
                    if taken == ticks and node._ticks == 0 and not node._wakeup.is_set():
                        break
                    await asyncio.sleep(0)
                else:
                    raise AssertionError(f"tick {ticks} was not taken")
                if any(isinstance(m, RequestVote) for m in sent):
                    return ticks
            raise AssertionError("no campaign within three election timeouts")
        finally:
            await node.stop()

    async def go():
        waits = [await ticks_before_first_campaign(seed, term=4) for seed in range(1, 21)]
        # The randomized timeout is 10-19 ticks: what is left of it after the advance of 8 is 2-11.
        assert all(heartbeat_ticks + 1 <= w <= config_ticks + 1 for w in waits), waits
        assert len(set(waits)) > 1, waits  # still randomized, so that candidates rarely tie
        first_start = [await ticks_before_first_campaign(seed, term=1) for seed in range(1, 21)]
        assert first_start == waits  # a group's first start as well

    run(go())


def test_a_restarted_follower_rejoins_its_leader_without_an_election():
    async def go():
        c = Cluster(3)
        for i in c.ids:
            await c.start(i)
        try:
            leader = await c.leader()
            term = leader.status().term
            follower = next(n for n in c.ids if n != leader.id)
            await leader.propose(b"a=1")
            await c.stop(follower)
            await leader.propose(b"b=2")
            restarted = await c.start(follower)
            await wait_for(lambda: c.kvs[follower].data.get("b") == "2")
            # Past the restarted node's advanced clock and a whole randomized timeout beyond it.
            elapsed = leader.tick_interval * 3 * restarted.config.election_ticks
            await asyncio.sleep(elapsed)
            assert leader.is_leader and leader.status().term == term
            assert restarted.status().leader_id == leader.id and restarted.status().term == term
        finally:
            await c.close()

    run(go())


def test_a_node_records_each_peer_it_hears_from_durably_before_the_core_sees_the_message():
    from controlplane.node import RaftNode, run_inline
    from controlplane.raft import RaftConfig
    from controlplane.raft.messages import Heartbeat
    from tests.node_cluster import KV, founder_storage

    class RecordingStorage:
        def __init__(self, inner):
            self.inner, self.records = inner, []

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def record_peers_heard(self, peers):
            self.records.append((peers, node.core.term if node.core else None))
            self.inner.record_peers_heard(peers)

    async def go():
        nonlocal node
        storage = RecordingStorage(founder_storage([1, 2, 3]))
        node = RaftNode(RaftConfig(node_id=1), storage, KV(), lambda m: None, run_blocking=run_inline)
        await node.start()
        try:
            term = node.status().term
            for _ in range(3):
                node.receive(Heartbeat(2, 1, term + 1, 0))
            await wait_for(lambda: storage.records)
            # Written once, while the core was still at its old term: before it stepped the message.
            assert storage.records == [(frozenset({2}), term)]
            await wait_for(lambda: node.status().term == term + 1)
            node.receive(Heartbeat(3, 1, term + 1, 0))
            await wait_for(lambda: len(storage.records) == 2)
            assert [peers for peers, _ in storage.records] == [frozenset({2}), frozenset({2, 3})]
        finally:
            await node.stop()
        restarted = RaftNode(RaftConfig(node_id=1), storage.inner, KV(), lambda m: None, run_blocking=run_inline)
        await restarted.start()
        try:
            assert restarted.peers_heard == {2, 3}
            assert restarted.status().term == term + 1
        finally:
            await restarted.stop()

    node = None
    run(go())


def test_a_disk_that_cannot_record_a_peer_heard_fails_the_node():
    from controlplane.node import RaftNode, run_inline
    from controlplane.raft import RaftConfig
    from controlplane.raft.messages import Heartbeat
    from tests.node_cluster import KV, founder_storage

    class FullDisk(FailingStorage):
        def record_peers_heard(self, peers):
            raise OSError(28, "injected ENOSPC")

    async def go():
        failures = []
        node = RaftNode(
            RaftConfig(node_id=1), FullDisk(founder_storage([1, 2, 3])), KV(), lambda m: None,
            run_blocking=run_inline, on_failure=failures.append,
        )  # fmt: skip
        await node.start()
        try:
            term = node.status().term
            node.receive(Heartbeat(2, 1, term + 1, 0))
            await wait_for(lambda: failures)
            assert isinstance(failures[0], OSError) and node.peers_heard == frozenset()
            with pytest.raises(NodeFailed):
                node.status()
        finally:
            await node.stop()

    run(go())
