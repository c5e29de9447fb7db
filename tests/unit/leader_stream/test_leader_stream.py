"""The leader stream between real aiohttp endpoints on 127.0.0.1, with a stand-in for the
replica's propose_many / query_many (what the replica does with them is tested elsewhere)."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest

from controlplane.leader_client import ControlPlaneError, RetryElsewhere
from controlplane.leader_stream.connection import LeaderStream, StreamNotServed
from controlplane.leader_stream.server import leader_stream_route
from controlplane.leader_stream.wire import PATH, SEGMENT_HEADER, encode_segment
from controlplane.raft import NotLeaderError
from controlplane.rpc.http import HTTPTransportServer
from controlplane.state.model import CommandError, NotFoundError

TOKEN = "leader-stream-token-0123456789"


class FakeReplica:
    def __init__(self) -> None:
        self.proposal_rounds: list[list[bytes]] = []
        self.query_rounds: list[tuple[list[tuple[str, object]], str]] = []
        self.segment_rounds: list[tuple[list[bytes], float]] = []
        self.delay = 0.0
        self.leading = True

    async def propose_many(self, commands: list[bytes], timeout: float = 5.0) -> list[tuple[str, object]]:
        self.proposal_rounds.append(commands)
        await asyncio.sleep(self.delay)
        if not self.leading:
            return [("retry", "NotLeaderError: not the leader")] * len(commands)
        return [("ok", {"ok": True, "echo": json.loads(c)}) for c in commands]

    async def submit_segments(self, segments: list[bytes], timeout: float = 10.0) -> list[object]:
        self.segment_rounds.append((segments, timeout))
        await asyncio.sleep(self.delay)
        if not self.leading:
            raise NotLeaderError(2)
        if segments[0].startswith(b"bad"):
            raise ValueError("telemetry segment is not an Arrow stream")
        return [{"accepted": len(segments[0]), "first": segments[0][:4].decode()}]

    async def query_many(self, queries, consistency="linearizable"):
        self.query_rounds.append((queries, consistency))
        await asyncio.sleep(self.delay)
        if not self.leading:
            raise NotLeaderError(2)
        return [
            (False, NotFoundError("id", f"no uav {a['id']}")) if a["id"] == "ghost" else (True, {"id": a["id"]})
            for _, a in queries
        ]


async def _serve(replica: FakeReplica, token: str | None = TOKEN, with_route: bool = True) -> HTTPTransportServer:
    server = HTTPTransportServer("127.0.0.1", 0, token=token)

    async def deliver(body: bytes) -> None:
        pass

    await server.start(deliver, [leader_stream_route(replica)] if with_route else [])
    return server


def run(coro):
    return asyncio.run(coro)


def test_callers_of_one_moment_share_a_frame_and_each_gets_its_own_answer():
    async def go():
        replica = FakeReplica()
        server = await _serve(replica)
        stream = LeaderStream(server.address, TOKEN)
        try:
            proposals = [stream.propose(json.dumps({"n": i}).encode(), 2.0) for i in range(20)]
            queries = [stream.query("uav", {"id": f"u{i}"}, "linearizable", 2.0) for i in range(5)]
            missing = stream.query("uav", {"id": "ghost"}, "linearizable", 2.0)
            results = await asyncio.gather(*proposals, *queries, missing, return_exceptions=True)
        finally:
            await stream.close()
            await server.close()
        assert results[:20] == [("ok", {"ok": True, "echo": {"n": i}}) for i in range(20)]
        assert results[20:25] == [{"id": f"u{i}"} for i in range(5)]
        assert isinstance(results[25], NotFoundError) and "ghost" in str(results[25])
        assert stream.requests_sent == 26 and stream.frames_sent < 26  # shared frames
        assert len(replica.proposal_rounds) < 20  # proposed together, as one actor call's propose_many

    run(go())


def test_a_replica_that_stopped_leading_answers_retry_and_a_query_says_retry_elsewhere():
    async def go():
        replica = FakeReplica()
        replica.leading = False
        server = await _serve(replica)
        stream = LeaderStream(server.address, TOKEN)
        try:
            assert (await stream.propose(b'{"n": 1}', 2.0))[0] == "retry"
            with pytest.raises(RetryElsewhere):
                await stream.query("uav", {"id": "u1"}, "linearizable", 2.0)
        finally:
            await stream.close()
            await server.close()

    run(go())


def test_no_answer_in_time_is_an_unknown_outcome_not_a_refusal():
    async def go():
        replica = FakeReplica()
        replica.delay = 2.0
        server = await _serve(replica)
        stream = LeaderStream(server.address, TOKEN)
        try:
            with pytest.raises(RetryElsewhere, match="did not answer"):
                await stream.propose(b'{"n": 1}', 0.2)
        finally:
            await stream.close()
            await server.close()

    run(go())


def test_a_replica_going_away_fails_the_waiting_calls_at_once():
    async def go():
        replica = FakeReplica()
        replica.delay = 30.0
        server = await _serve(replica)
        stream = LeaderStream(server.address, TOKEN)
        try:
            waiting = asyncio.ensure_future(stream.propose(b'{"n": 1}', 20.0))
            async with asyncio.timeout(5):
                while not replica.proposal_rounds:
                    await asyncio.sleep(0.01)
            started = asyncio.get_running_loop().time()
            await server.close()
            with pytest.raises(RetryElsewhere, match="closed"):
                await waiting
            assert asyncio.get_running_loop().time() - started < 2.0
            with pytest.raises(RetryElsewhere, match="cannot reach"):
                await stream.propose(b'{"n": 2}', 1.0)  # and the next call says it cannot get there
        finally:
            await stream.close()

    run(go())


def test_a_malformed_request_is_refused_by_name_and_the_stream_goes_on():
    async def go():
        replica = FakeReplica()
        server = await _serve(replica)
        stream = LeaderStream(server.address, TOKEN)
        try:
            with pytest.raises(ValueError, match="consistency"):
                await stream.query("uav", {"id": "u1"}, "eventual", 2.0)
            assert await stream.query("uav", {"id": "u1"}, "linearizable", 2.0) == {"id": "u1"}
        finally:
            await stream.close()
            await server.close()

    run(go())


def test_a_garbled_frame_closes_that_stream(caplog):
    async def go():
        server = await _serve(FakeReplica(), token=None)
        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(server.address + PATH) as ws:
                await ws.send_str("not json")
                message = await ws.receive(timeout=5)
                assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                assert ws.close_code == aiohttp.WSCloseCode.INVALID_TEXT
        finally:
            await server.close()

    with caplog.at_level(logging.WARNING):
        run(go())
    assert "not JSON" in caplog.text


def test_a_wrong_token_is_refused_by_name_and_never_logged(caplog):
    async def go():
        server = await _serve(FakeReplica())
        stream = LeaderStream(server.address, "wrong-token-but-long-enough")
        try:
            with pytest.raises(ControlPlaneError, match="refused the cluster token"):
                await stream.propose(b'{"n": 1}', 2.0)
        finally:
            await stream.close()
            await server.close()

    with caplog.at_level(logging.DEBUG):
        run(go())
    assert TOKEN not in caplog.text and "wrong-token" not in caplog.text


def test_a_replica_without_the_stream_says_so():
    async def go():
        server = await _serve(FakeReplica(), with_route=False)
        stream = LeaderStream(server.address, TOKEN)
        try:
            with pytest.raises(StreamNotServed):
                await stream.propose(b'{"n": 1}', 2.0)
        finally:
            await stream.close()
            await server.close()

    run(go())


def test_a_leader_gone_silent_is_given_up_within_a_second_not_at_the_calls_timeout():
    async def go():
        async def silent(request):  # takes the stream, then answers nothing, not even pings
            ws = aiohttp.web.WebSocketResponse(autoping=False)
            await ws.prepare(request)
            async for _ in ws:  # pings arrive here and go unanswered
                pass
            return ws

        server = HTTPTransportServer("127.0.0.1", 0)

        async def deliver(body: bytes) -> None:
            pass

        await server.start(deliver, [aiohttp.web.get(PATH, silent)])
        stream = LeaderStream(server.address, None)
        loop = asyncio.get_running_loop()
        try:
            started = loop.time()
            with pytest.raises(RetryElsewhere, match="closed"):
                await stream.propose(b'{"n": 1}', 10.0)
            assert loop.time() - started < 2.0
        finally:
            await stream.close()
            await server.close()

    run(go())


def test_streams_to_replicas_gone_are_forgotten_not_kept_forever():
    from controlplane.leader_stream.connection import leader_stream, streams_in_this_loop

    async def go():
        first = await _serve(FakeReplica())
        old = leader_stream(first.address, TOKEN)
        await old.propose(b'{"n": 1}', 2.0)
        await first.close()  # a restarted replica comes back on another port
        async with asyncio.timeout(5):
            while not old.disposable:
                await asyncio.sleep(0.01)
        second = await _serve(FakeReplica())
        try:
            new = leader_stream(second.address, TOKEN)
            await new.propose(b'{"n": 2}', 2.0)
            assert streams_in_this_loop() == [new]
        finally:
            await new.close()
            await second.close()

    run(go())


def test_a_request_json_cannot_carry_is_refused_by_name_and_its_frame_mates_still_go():
    async def go():
        server = await _serve(FakeReplica())
        stream = LeaderStream(server.address, TOKEN)
        try:
            bad = stream.query("uav", {"id": {1, 2}}, "linearizable", 2.0)  # a set: not JSON
            good = stream.query("uav", {"id": "u1"}, "linearizable", 2.0)
            results = await asyncio.gather(bad, good, return_exceptions=True)
        finally:
            await stream.close()
            await server.close()
        assert isinstance(results[0], ValueError) and "JSON" in str(results[0])
        assert results[1] == {"id": "u1"}

    run(go())


def test_an_answer_json_cannot_carry_comes_back_as_an_error_not_a_silence():
    class OddReplica(FakeReplica):
        async def query_many(self, queries, consistency="linearizable"):
            return [(True, {"tags": {"a", "b"}}) if a["id"] == "odd" else (True, {"id": a["id"]}) for _, a in queries]

    async def go():
        server = await _serve(OddReplica())
        stream = LeaderStream(server.address, TOKEN)
        try:
            odd = stream.query("uav", {"id": "odd"}, "linearizable", 2.0)
            fine = stream.query("uav", {"id": "u1"}, "linearizable", 2.0)
            results = await asyncio.gather(odd, fine, return_exceptions=True)
        finally:
            await stream.close()
            await server.close()
        assert isinstance(results[0], CommandError) and "JSON" in str(results[0])
        assert results[1] == {"id": "u1"}

    run(go())


def test_segments_travel_in_binary_frames_beside_requests_each_answered_by_its_id(monkeypatch):
    """... unmasked, as on the replicas' streams (rpc/stream.py says why)."""
    from aiohttp._websocket import writer

    masked: list[int] = []
    mask = writer.websocket_mask
    monkeypatch.setattr(writer, "websocket_mask", lambda key, data: (masked.append(len(data)), mask(key, data))[1])

    async def go():
        replica = FakeReplica()
        server = await _serve(replica)
        stream = LeaderStream(server.address, TOKEN)
        try:
            segments = [b"seg%d" % i + bytes(range(256)) * i for i in range(8)]
            results = await asyncio.gather(
                *(stream.submit_segment(s, 3.0) for s in segments), stream.propose(b'{"n": 1}', 2.0)
            )
        finally:
            await stream.close()
            await server.close()
        assert results[:8] == [[{"accepted": len(s), "first": s[:4].decode()}] for s in segments]
        assert results[8] == ("ok", {"ok": True, "echo": {"n": 1}})
        assert sorted(r[0][0] for r in replica.segment_rounds) == sorted(segments)  # the bytes, whole
        assert {r[1] for r in replica.segment_rounds} == {3.0}  # the caller's timeout reaches the replica
        assert masked == []

    run(go())


def test_a_malformed_segment_is_refused_by_name_and_one_on_a_follower_says_retry_elsewhere():
    async def go():
        replica = FakeReplica()
        server = await _serve(replica)
        stream = LeaderStream(server.address, TOKEN)
        try:
            with pytest.raises(ValueError, match="not an Arrow stream"):
                await stream.submit_segment(b"bad bytes", 2.0)
            replica.leading = False
            with pytest.raises(RetryElsewhere, match="NotLeaderError"):
                await stream.submit_segment(b"good bytes", 2.0)
            replica.leading, replica.delay = True, 2.0
            with pytest.raises(RetryElsewhere, match="did not answer"):  # unknown, not refused
                await stream.submit_segment(b"slow bytes", 0.2)
        finally:
            await stream.close()
            await server.close()

    run(go())


def test_a_segment_frame_with_a_bad_timeout_is_refused_and_one_without_a_header_closes_the_stream(caplog):
    async def go():
        server = await _serve(FakeReplica(), token=None)
        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(server.address + PATH) as ws:
                await ws.send_bytes(encode_segment(7, 0.0, b"seg"))
                assert json.loads((await ws.receive(timeout=5)).data) == [
                    [7, "invalid", "a segment's timeout must be in (0, 60] seconds, got 0.0"]
                ]
                await ws.send_bytes(b"\x01" * (SEGMENT_HEADER.size - 1))
                message = await ws.receive(timeout=5)
                assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                assert ws.close_code == aiohttp.WSCloseCode.UNSUPPORTED_DATA
        finally:
            await server.close()

    with caplog.at_level(logging.WARNING):
        run(go())
    assert "header" in caplog.text
