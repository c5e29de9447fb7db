"""The replica's side of the leader stream, served on its peer port behind the cluster
token. A frame's proposals are proposed together (one Raft round, as an actor call's
propose_many), its queries read after one ReadIndex barrier per consistency; each group's
answers go back as one frame as soon as they are known, so a slow group never holds up a
fast one and the client can keep sending meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from controlplane.leader_stream.wire import (
    PATH,
    Answer,
    Proposal,
    Query,
    Segment,
    decode_requests,
    decode_segment,
    encode,
    unencodable,
)
from controlplane.raft import RaftError
from controlplane.standalone.wire import encode_error
from controlplane.state.model import CommandError

log = logging.getLogger(__name__)


class LeaderCalls(Protocol):
    async def propose_many(self, commands: list[bytes], timeout: float = 5.0) -> list[tuple[str, Any]]: ...

    async def query_many(
        self, queries: list[tuple[str, dict[str, Any] | None]], consistency: str = "linearizable"
    ) -> list[tuple[bool, Any]]: ...

    async def submit_segments(self, segments: list[bytes], timeout: float = 10.0) -> list[Any]: ...


def leader_stream_route(replica: LeaderCalls) -> web.RouteDef:
    async def serve(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=64 << 20)
        await ws.prepare(request)
        answering: set[asyncio.Task[None]] = set()

        def answer(work: Any) -> None:
            task = asyncio.get_running_loop().create_task(_send_when_known(ws, work))
            answering.add(task)
            task.add_done_callback(answering.discard)

        try:
            async for message in ws:
                if message.type is aiohttp.WSMsgType.BINARY:
                    try:
                        segment, refused = decode_segment(message.data)
                    except ValueError as exc:
                        await _close(ws, request, aiohttp.WSCloseCode.UNSUPPORTED_DATA, exc)
                        break
                    if refused is not None:
                        await ws.send_str(encode([refused]))
                    if segment is not None:
                        answer(_submit(replica, segment))
                    continue
                if message.type is not aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    requests, invalid = decode_requests(message.data)
                except ValueError as exc:
                    await _close(ws, request, aiohttp.WSCloseCode.INVALID_TEXT, exc)
                    break
                if invalid:
                    await ws.send_str(encode(invalid))
                proposals = [r for r in requests if isinstance(r, Proposal)]
                if proposals:
                    answer(_propose(replica, proposals))
                queries = [r for r in requests if isinstance(r, Query)]
                for consistency in {q.consistency for q in queries}:
                    answer(_query(replica, [q for q in queries if q.consistency == consistency]))
        finally:
            for task in answering:  # the client is gone: nobody is left to tell
                task.cancel()
        return ws

    return web.get(PATH, serve)


async def _close(ws: web.WebSocketResponse, request: web.Request, code: int, why: ValueError) -> None:
    """A frame nobody can answer: the stream is closed, saying why."""
    log.warning("closing a leader stream from %s: %s", request.remote, why)
    await ws.close(code=code, message=str(why)[:120].encode())


async def _send_when_known(ws: web.WebSocketResponse, work: Any) -> None:
    answers: list[Answer] = await work
    try:
        frame = encode(answers)
    except (TypeError, ValueError):
        frame = encode([_carried(answer) for answer in answers])
    with contextlib.suppress(ConnectionError, RuntimeError):  # the client left meanwhile
        await ws.send_str(frame)


def _carried(answer: Answer) -> Answer:
    """The answer if JSON can carry it, else an error naming why (a query's answer only:
    commands answer with plain dicts)."""
    why = unencodable(answer)
    if why is None:
        return answer
    log.error("an answer cannot travel as JSON: %s", why)
    return [answer[0], "error", encode_error(CommandError("answer", f"cannot travel as JSON: {why}"))]


async def _propose(replica: LeaderCalls, proposals: list[Proposal]) -> list[Answer]:
    outcomes = await replica.propose_many([p.command for p in proposals], max(p.timeout for p in proposals))
    return [[p.id, outcome, value] for p, (outcome, value) in zip(proposals, outcomes, strict=True)]


async def _submit(replica: LeaderCalls, segment: Segment) -> list[Answer]:
    try:
        applied = await replica.submit_segments([segment.data], segment.timeout)
    except ValueError as exc:  # a malformed segment, refused before the log
        return [[segment.id, "invalid", str(exc)]]
    except (RaftError, TimeoutError) as exc:  # not the leader, or no answer in time: unknown
        return [[segment.id, "retry", f"{type(exc).__name__}: {exc}"]]
    except Exception as exc:  # the outcome is unknown: a retry is a duplicate at worst
        log.exception("a telemetry segment failed on the leader stream")
        return [[segment.id, "retry", f"{type(exc).__name__}: {exc}"]]
    return [[segment.id, "ok", applied]]


async def _query(replica: LeaderCalls, queries: list[Query]) -> list[Answer]:
    try:
        results = await replica.query_many([(q.name, q.args) for q in queries], queries[0].consistency)
    except (RaftError, TimeoutError) as exc:
        return [[q.id, "retry", f"{type(exc).__name__}: {exc}"] for q in queries]
    return [
        [q.id, "ok", value] if ok else [q.id, "error", encode_error(value)]
        for q, (ok, value) in zip(queries, results, strict=True)
    ]
