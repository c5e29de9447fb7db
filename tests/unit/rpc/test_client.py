from __future__ import annotations

import asyncio
import random

import pandas as pd
import pytest

from controlplane.raft.codec import decode_batch, encode_batch
from controlplane.raft.messages import AppendEntriesResponse, Heartbeat, RequestVote, RequestVoteResponse
from controlplane.rpc.client import Peer, RaftRPCClient
from controlplane.rpc.config import RPCConfig
from controlplane.rpc.errors import RPCAuthError, RPCConnectionError, RPCTimeoutError
from controlplane.rpc.stats import SCHEMA, ArrowStatsWriter
from controlplane.rpc.transport import InMemoryNetwork

FAST = RPCConfig(timeout=0.2, max_retries=3, retry_delay=0.01, retry_backoff=2.0, jitter=0.2)
TOKEN = "cluster-token-abcdefghijklmnop"


class Inbox:
    def __init__(self) -> None:
        self.messages: list = []
        self.fail_next = 0

    async def __call__(self, body: bytes) -> None:
        self.messages.extend(decode_batch(body))

    async def answer(self, body: bytes) -> bytes:
        """As a peer's Raft would: a vote refused at term 5, an append accepted up to its end."""
        (m,) = decode_batch(body)
        self.messages.append(m)
        if isinstance(m, RequestVote):
            return encode_batch((RequestVoteResponse(m.dst, m.src, 5, False),))
        return encode_batch((AppendEntriesResponse(m.dst, m.src, m.term, True, m.prev_log_index + len(m.entries)),))


async def setup(config=FAST, token=None, **kw):
    net = InMemoryNetwork()
    inbox = Inbox()
    server = net.server("mem://2", token)
    await server.start(inbox, answer=inbox.answer)
    client = RaftRPCClient(1, net.transport(token), config, rng=random.Random(7), **kw)
    return net, inbox, client, Peer(2, "mem://2")


def test_config_is_validated_and_hides_the_token():
    assert RPCConfig().timeout == 2.0 and RPCConfig().max_retries == 3
    assert RPCConfig().retry_delay == 0.1 and RPCConfig().retry_backoff == 2.0
    for bad in ({"timeout": 0}, {"max_retries": -1}, {"retry_backoff": 0.5}, {"jitter": 1.0}, {"cluster_token": "x"}):
        with pytest.raises(ValueError, match="RPCConfig"):
            RPCConfig(**bad)
    assert TOKEN not in repr(RPCConfig(cluster_token=TOKEN))


def test_backoff_is_exponential_with_bounded_jitter():
    cfg = RPCConfig(retry_delay=0.1, retry_backoff=2.0, jitter=0.2, max_retry_delay=0.5)
    assert [round(cfg.delay_before(n, 0.5), 3) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.5]
    assert cfg.delay_before(1, 0.0) == pytest.approx(0.08) and cfg.delay_before(1, 0.999999) == pytest.approx(0.12)


def test_seed_api_calls_deliver_messages():
    async def go():
        _, inbox, client, peer = await setup()
        vote = await client.request_vote(peer, candidate_id=1, term=3, last_log_index=7, last_log_term=2)
        assert vote == {"term": 5, "vote_granted": False, "node_id": 2}  # the peer's answer
        appended = await client.append_entries(peer, 1, 3, 7, 2, [], 7)
        assert appended["success"] and appended["match_index"] == 7 and appended["term"] == 3
        await client.timeout_now(peer, 3)
        assert inbox.messages[0] == RequestVote(1, 2, 3, 7, 2)
        assert [type(m).__name__ for m in inbox.messages] == ["RequestVote", "AppendEntries", "TimeoutNow"]
        s = client.get_statistics()
        assert s["total_requests"] == 3 and s["success_rate"] == 1.0 and s["retries"] == 0
        assert s["peers"]["2"]["latency_ms"]["p50"] is not None

    asyncio.run(go())


def test_connection_errors_are_retried_until_the_peer_is_back():
    async def go():
        net, inbox, client, peer = await setup()
        net.down.add(peer.address)
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, net.down.discard, peer.address)
        await client.request_vote(peer, 1, 3, 7, 2)
        assert len(inbox.messages) == 1
        s = client.get_statistics()
        assert s["retries"] >= 1 and s["success_rate"] == 1.0
        assert s["peers"]["2"]["outcomes"]["connection"] >= 1

    asyncio.run(go())


def test_gives_up_after_max_retries_and_reports_rates():
    async def go():
        net, _, client, peer = await setup()
        net.delay[peer.address] = 1.0
        with pytest.raises(RPCTimeoutError):
            await client.timeout_now(peer, 3)
        s = client.get_statistics()
        assert s["attempts"] == FAST.max_retries + 1
        assert s["failure_rate"] == 1.0 and s["timeout_rate"] == 1.0

    asyncio.run(go())


def test_rejections_are_not_retried():
    async def go():
        net = InMemoryNetwork()
        await net.server("mem://2", TOKEN).start(Inbox())
        client = RaftRPCClient(1, net.transport("not-the-token-at-all"), FAST)
        with pytest.raises(RPCAuthError):
            await client.timeout_now(Peer(2, "mem://2"), 1)
        s = client.get_statistics()
        assert s["attempts"] == 1 and s["auth_rejections"] == 1

    asyncio.run(go())


def test_post_coalesces_and_drops_superseded_batches_instead_of_queueing():
    async def go():
        net, inbox, client, peer = await setup(RPCConfig(timeout=0.05, max_retries=50, retry_delay=0.02))
        net.down.add(peer.address)
        client.post(peer, Heartbeat(1, 2, 1, 0))
        await asyncio.sleep(0.01)  # the first batch is failing and retrying
        for commit in range(1, 6):
            client.post(peer, Heartbeat(1, 2, 1, commit))
        await asyncio.sleep(0.05)
        net.down.discard(peer.address)
        for _ in range(100):
            if inbox.messages:
                break
            await asyncio.sleep(0.01)
        # The stale heartbeat was dropped; the five newer ones went out as one batch.
        assert [m.commit for m in inbox.messages] == [1, 2, 3, 4, 5]
        assert client.get_statistics()["dropped"] == 1
        await client.close()

    asyncio.run(go())


def test_unreachable_peer_eventually_raises_connection_error():
    async def go():
        _, _, client, _ = await setup()
        with pytest.raises(RPCConnectionError):
            await client.timeout_now(Peer(9, "mem://9"), 1)

    asyncio.run(go())


def test_every_attempt_lands_in_parquet_with_the_schema(tmp_path):
    async def go():
        writer = ArrowStatsWriter(tmp_path, node="1", flush_rows=1000)
        net, _, client, peer = await setup(hooks=[writer])
        for i in range(20):
            await client.request_vote(peer, 1, i, i, i)
        net.down.add(peer.address)
        with pytest.raises(RPCConnectionError):
            await client.timeout_now(peer, 99)
        writer.close()
        return writer

    writer = asyncio.run(go())
    files = sorted(tmp_path.glob("rpc-stats-1-*.parquet"))
    assert len(files) == 1 and writer.rows_written == 24
    df = pd.read_parquet(files[0])
    assert list(df.columns) == SCHEMA.names
    assert (df["outcome"] == "ok").sum() == 20
    failed = df[df["method"] == "timeout_now"]
    assert list(failed["attempt"]) == [1, 2, 3, 4] and set(failed["error_type"]) == {"RPCConnectionError"}
    assert (df["latency_ms"] >= 0).all() and (df["request_bytes"] > 0).all()
    assert str(df["time"].dtype).startswith("datetime64")


def test_a_peer_server_off_loopback_needs_a_cluster_token():
    from controlplane.rpc.http import HTTPTransportServer

    async def nothing(body: bytes) -> None:
        return None

    async def go():
        with pytest.raises(ValueError, match="without a cluster token"):
            await HTTPTransportServer("10.1.2.3", 0).start(nothing)  # refused before anything binds
        loopback = HTTPTransportServer("127.0.0.1", 0)
        await loopback.start(nothing)  # one machine, no token: allowed
        await loopback.close()

    asyncio.run(go())
