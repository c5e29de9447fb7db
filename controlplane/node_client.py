"""The SDK for a group of standalone nodes (`python -m controlplane node`), reached by
address: the calls standalone/routes.py answers on each node's peer port, with the group's
cluster token; commands and linearizable reads over the leader's stream (leader_stream/).
Same contract as client.ControlPlane (exactly-once commands, linearizable reads, the change
feed), no Ray.

    group = NodeGroup(["http://10.0.0.1:8888", "http://10.0.0.2:8888"], token=...)
    await group.command({"type": "register_uav", "uav": "u1", "home": "s1"})
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp

from controlplane.leader_client import ControlPlaneError, LeaderClient, RetryElsewhere
from controlplane.leader_lookup import LeaderLookup
from controlplane.leader_stream.connection import leader_stream
from controlplane.standalone.wire import PREFIX, decode_error

Addresses = Callable[[], Mapping[int, str]]


class NodeGroup(LeaderClient):
    def __init__(
        self,
        addresses: Sequence[str] | Addresses,
        *,
        token: str | None = None,
        ask_timeout: float = 0.5,
    ) -> None:
        """addresses: the nodes' peer URLs (http://host:NODE_PORT), or a function giving them
        by Raft id (a node's own view of its peers, from discovery)."""
        super().__init__()
        self._by_url: dict[int, str] | None = None  # given addresses only (not a node's own view)
        if callable(addresses):
            self._addresses: Addresses = addresses
        else:
            urls = [a.rstrip("/") for a in addresses]
            if not urls:
                raise ControlPlaneError("no node addresses given")
            # Keyed by position until the nodes tell their Raft ids (status()).
            by_url = self._by_url = {-i - 1: u for i, u in enumerate(urls)}
            self._addresses = lambda: by_url
        self.ask_timeout = ask_timeout
        self._token = token
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None
        self._lookup: LeaderLookup[str] = LeaderLookup(self.find_leader)

    def another(self) -> NodeGroup:
        """A client of the same nodes with a session of its own."""
        return NodeGroup(self._addresses, token=self._token, ask_timeout=self.ask_timeout)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    async def close(self) -> None:
        self._lookup.close()
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, url: str, path: str, timeout: float, **kwargs: Any) -> tuple[int, Any]:
        """(status, JSON body); RetryElsewhere when the node cannot be reached in time or its
        answer is not JSON; ControlPlaneError for a refused token; ValueError for a refused request."""
        try:
            async with self._http().request(
                method, f"{url}{PREFIX}/{path}", timeout=aiohttp.ClientTimeout(total=timeout), **kwargs
            ) as resp:
                status, text = resp.status, await resp.text()
            body = json.loads(text) if text and status not in (400, 401) else None
        except (TimeoutError, aiohttp.ClientError, OSError, json.JSONDecodeError) as exc:
            raise RetryElsewhere(f"{url}: {type(exc).__name__}: {exc}") from exc
        if status == 401:
            raise ControlPlaneError(f"{url} refused the cluster token")
        if status == 400:
            raise ValueError(f"{url} refused the request: {text[:300]}")
        return status, body

    async def status(self) -> list[dict[str, Any]]:
        """Every node's status (an "error" entry for a node that does not answer), including
        the nodes the ones asked first told of."""
        answers: dict[str, dict[str, Any]] = {}
        while True:
            urls = [u for u in dict.fromkeys(self._addresses().values()) if u not in answers]
            if not urls:
                return list(answers.values())
            results = await asyncio.gather(
                *(self._call("GET", u, "status", self.ask_timeout) for u in urls), return_exceptions=True
            )
            for url, result in zip(urls, results, strict=True):
                if isinstance(result, ControlPlaneError):
                    raise result  # a wrong or missing cluster token: no node will answer
                if isinstance(result, BaseException):
                    answers[url] = {"address": url, "error": f"{type(result).__name__}: {result}"}
                else:
                    answers[url] = dict(result[1])
                    self._learn(url, answers[url])

    def _learn(self, url: str, status: dict[str, Any]) -> None:
        """Given addresses only: learn each node's Raft id, and the members a node knows of
        (so one address is enough to find the whole group)."""
        by_url = self._by_url
        if by_url is None or not isinstance(status.get("replica"), int):
            return
        for key, known in list(by_url.items()):
            if known == url and key != status["replica"]:
                del by_url[key]
        by_url[status["replica"]] = url
        for raft_id, peer_url in dict(status.get("peers") or {}).items():
            if str(raft_id).isdigit() and isinstance(peer_url, str) and peer_url not in by_url.values():
                by_url[int(raft_id)] = peer_url

    async def find_leader(self, timeout: float = 15.0) -> str:
        """The peer URL of the node that says it leads; waits out elections."""
        status = await self.leader_status(timeout)
        return str(self._addresses().get(int(status["replica"])) or status["address"])

    async def _leader(self, timeout: float) -> str:
        """The leader's URL; callers that need it at the same moment share one lookup (256
        concurrent commands after a failover asked every node 256 times)."""
        return await self._lookup.leader(timeout)

    def _leader_lost(self) -> None:
        self._lookup.lost()

    async def _propose_once(self, data: bytes, timeout: float) -> tuple[str, Any]:
        url = await self._leader(timeout)
        return await leader_stream(url, self._token).propose(data, min(timeout, 5.0))

    async def _query_once(self, name: str, args: dict[str, Any] | None, timeout: float) -> Any:
        url = await self._leader(timeout)
        return await leader_stream(url, self._token).query(name, args, "linearizable", min(timeout, 5.0))

    async def query(
        self, name: str, args: dict[str, Any] | None = None, consistency: str = "linearizable", timeout: float = 15.0
    ) -> Any:
        """A named query (state/queries.py): "linearizable" on the leader after a ReadIndex
        barrier; "stale" from the first node that answers."""
        if consistency not in ("linearizable", "stale"):
            raise ValueError(f"consistency must be 'linearizable' or 'stale', got {consistency!r}")
        if consistency == "linearizable":
            return await self.read(name, args, timeout)
        for url in dict.fromkeys(self._addresses().values()):
            body = {"queries": [[name, args]], "consistency": "stale"}
            try:
                status, answer = await self._call("POST", url, "query", self.ask_timeout, json=body)
            except RetryElsewhere:
                continue
            if status == 200:
                ok, value = answer["answers"][0]
                if not ok:
                    raise decode_error(value)
                return value
        raise TimeoutError("no node answered a stale read")

    async def watch(self, from_index: int, kinds: list[str] | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """Changes after `from_index` from the leader's change feed (long poll)."""
        url = await self._leader(timeout)
        params = {"from_index": str(from_index), "timeout": str(timeout)}
        if kinds is not None:
            params["kinds"] = ",".join(kinds)
        try:
            _, answer = await self._call("GET", url, "watch", timeout + 2.0, params=params)
        except RetryElsewhere as exc:
            self._leader_lost()
            raise TimeoutError(str(exc)) from None
        return dict(answer)

    async def checkpoint_digests(self, index: int) -> dict[str, dict[str, str] | None]:
        """Each node's table digests at checkpoint `index` (None: not there yet, or down)."""
        by_id = dict(self._addresses())
        results = await asyncio.gather(
            *(self._call("GET", u, "digests", self.ask_timeout, params={"index": str(index)}) for u in by_id.values()),
            return_exceptions=True,
        )
        return {
            str(nid): (r[1]["digests"] if not isinstance(r, BaseException) else None)
            for nid, r in zip(by_id, results, strict=True)
        }

    async def submit_segment(self, segment: bytes, timeout: float = 15.0) -> Any:
        """One encoded telemetry segment to the leader; the apply counts of its entry."""
        answer = await self._on_leader("segments", timeout, 0.05, data=segment)
        return answer["applied"]

    async def change_membership(self, op: str, node_id: int, timeout: float = 30.0) -> None:
        """add_learner, add_voter or remove `node_id`, on the leader, retried until `timeout`."""
        body = {"op": op, "node_id": node_id, "timeout": 10.0}
        await self._on_leader("membership", timeout, 0.2, json=body)

    async def _on_leader(self, path: str, timeout: float, pause: float, **body: Any) -> Any:
        """POST `body` (aiohttp's data= or json=) to the leader's `path` until it answers 200,
        following the leader as it moves; TimeoutError saying what happened last."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                url = await self._leader(max(0.1, deadline - loop.time()))
                left = max(0.5, deadline - loop.time())
                status, answer = await self._call("POST", url, path, left, **body)
                if status == 200:
                    return answer
                last = f"{url} answered {status}: {answer}"
            except RetryElsewhere as exc:
                last = str(exc)
            self._leader_lost()
            if loop.time() > deadline:
                raise TimeoutError(f"{path} not done within {timeout}s: {last}")
            await asyncio.sleep(pause)

    async def leader_status(self, timeout: float = 15.0) -> dict[str, Any]:
        """The leader's own status (its voters, learners and followers' match indices)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for status in await self.status():
                if status.get("role") == "leader":
                    return status
            if loop.time() > deadline:
                raise TimeoutError(f"no leader among {sorted(set(self._addresses().values()))} within {timeout}s")
            await asyncio.sleep(0.1)

    async def add_member(self, raft_id: int, timeout: float = 60.0) -> None:
        """Add a node (started with NODE_JOIN=1 and known to discovery) as a learner, then
        promote it to voter once it has caught up, so the group's quorum never waits on a
        node that is still copying the log. Safe to run again after an interruption."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        status = await self.leader_status(timeout)
        if raft_id in status["voters"]:
            return
        if raft_id not in status["learners"]:
            await self.change_membership("add_learner", raft_id, deadline - loop.time())
        while True:  # promote only a learner that has caught up
            status = await self.leader_status(max(0.1, deadline - loop.time()))
            if int(status["match"].get(str(raft_id), 0)) >= status["commit"] - 1:
                break
            if loop.time() > deadline:
                raise TimeoutError(f"node {raft_id} did not catch up within {timeout}s (leader: {status})")
            await asyncio.sleep(0.1)
        await self.change_membership("add_voter", raft_id, max(0.1, deadline - loop.time()))

    async def remove_member(self, raft_id: int, timeout: float = 30.0) -> None:
        """Remove a node from the group (voter or learner); nothing to do if it is not a member."""
        status = await self.leader_status(timeout)
        if raft_id in status["voters"] or raft_id in status["learners"]:
            await self.change_membership("remove", raft_id, timeout)
