"""The Python SDK: ControlPlane finds a group's replicas by their actor names, sends fleet
commands to the leader (following NotLeader answers and waiting out elections), and
retries with the same (session, seq) so a command is applied once even when an answer
is lost. Queries are linearizable (ReadIndex on the leader) or explicitly stale; watch()
follows the change feed from a log index.

Commands and linearizable queries go over the leader stream (leader_stream/): Ray finds
the leader and tells its address once, then the process's clients share one WebSocket to
it. An actor call costs more than a replication round here; they stay for control
(status, watch, digests) and for replicas that serve no HTTP (transport "ray")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import ray

from controlplane import replica_calls
from controlplane.leader_client import ControlPlaneError, LeaderClient, OutcomeUnknown, RetryElsewhere
from controlplane.leader_lookup import LeaderLookup
from controlplane.leader_stream.connection import LeaderStream, StreamNotServed, leader_stream
from controlplane.raft import RaftError
from controlplane.ray_group import NAMESPACE, find_leader, group_replicas

__all__ = ["ControlPlane", "ControlPlaneError", "OutcomeUnknown", "attach", "propose_to_leader"]


@contextlib.contextmanager
def _retry_elsewhere_on_ray_errors() -> Iterator[None]:
    """What Ray raises when the replica asked cannot answer (dead, restarting, not leading,
    timed out) becomes RetryElsewhere; the query's or command's own errors stay as they are."""
    try:
        yield
    except ray.exceptions.RayTaskError as exc:
        if not isinstance(exc.cause, RaftError | TimeoutError):
            raise
        raise RetryElsewhere(str(exc)) from exc
    except (ray.exceptions.RayActorError, TimeoutError) as exc:
        raise RetryElsewhere(str(exc)) from exc


def attach(address: str = "auto") -> None:
    """Join a running Ray cluster in the control plane's namespace (once per process);
    ConnectionError naming the address when there is none."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, namespace=NAMESPACE, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError) as exc:
        raise ConnectionError(f"no Ray cluster at {address!r}: {exc}") from None


class _GroupLeader:
    """What the clients of one group share in one event loop: the leader's id (one lookup at
    a time for all of them) and each replica's leader stream endpoint."""

    def __init__(self, replicas: dict[int, Any]) -> None:
        self.replicas = replicas
        # Per replica: its leader stream's address and token, None when it serves none.
        self.endpoints: dict[int, tuple[str, str] | None] = {}
        self.lookup: LeaderLookup[int] = LeaderLookup(self._find)

    async def _find(self, timeout: float) -> int:
        leader = await find_leader(self.replicas, timeout)
        if leader not in self.endpoints:
            await self.fetch_endpoint(leader, timeout)
        return leader

    async def fetch_endpoint(self, replica: int, timeout: float) -> None:
        with _retry_elsewhere_on_ray_errors():
            handle = self.replicas[replica]
            self.endpoints[replica] = await asyncio.wait_for(handle.client_endpoint.remote(), min(timeout, 5.0))


# Keyed by group and replica handles (a handle compares by its actor's id, so a group deployed
# again under the same name gets a record of its own).
_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, _GroupLeader]] = weakref.WeakKeyDictionary()


def _group_leader(group: str, replicas: dict[int, Any]) -> _GroupLeader:
    groups = _per_loop.setdefault(asyncio.get_running_loop(), {})
    key = (group, frozenset(replicas.items()))
    if key not in groups:
        groups[key] = _GroupLeader(replicas)
    return groups[key]


class ControlPlane(LeaderClient):
    """The SDK for a group deployed as Ray actors (actors.deploy), found by its name. Clients
    of the same group in one process share its leader's lookup and leader stream."""

    def __init__(self, group: str, replicas: dict[int, Any]) -> None:
        if not replicas:
            raise ControlPlaneError(f"group {group!r} has no replicas")
        super().__init__()
        self.group = group
        self.replicas = replicas
        self._leader: int | None = None  # the leader this client's last try went to
        self._shared_record: _GroupLeader | None = None  # and the loop it belongs to:
        self._shared_in: Callable[[], asyncio.AbstractEventLoop | None] = lambda: None

    def another(self) -> ControlPlane:
        """A client of the same group with a session of its own."""
        return ControlPlane(self.group, self.replicas)

    @classmethod
    def connect(cls, group: str, address: str = "auto") -> ControlPlane:
        """Attach to Ray (address "auto": the running cluster) and find the group's replicas."""
        attach(address)
        replicas = group_replicas(group)
        if not replicas:
            raise ControlPlaneError(f"no replicas of group {group!r} in namespace {NAMESPACE!r}; deploy it first")
        return cls(group, replicas)

    def _shared(self) -> _GroupLeader:
        """The running loop's record of this group (kept: found again only in another loop)."""
        loop = asyncio.get_running_loop()
        if self._shared_record is None or self._shared_in() is not loop:
            self._shared_record, self._shared_in = _group_leader(self.group, self.replicas), weakref.ref(loop)
        return self._shared_record

    async def _leader_handle(self, timeout: float) -> Any:
        """The leader's actor handle; RetryElsewhere when none is found within `timeout`."""
        self._leader = await self._shared().lookup.leader(timeout)
        return self.replicas[self._leader]

    def _leader_lost(self) -> None:
        if self._leader is not None:
            self._shared().lookup.lost(self._leader)
            self._leader = None

    async def _leader_stream(self, timeout: float) -> LeaderStream | None:
        """The stream to the leader; None when it serves none (then actor calls carry all)."""
        await self._leader_handle(timeout)
        assert self._leader is not None
        shared = self._shared()
        if self._leader not in shared.endpoints:  # forgotten since the lookup (a restarted replica)
            await shared.fetch_endpoint(self._leader, timeout)
        endpoint = shared.endpoints[self._leader]
        return None if endpoint is None else leader_stream(*endpoint)

    async def _at_the_leader(self, timeout: float, by_stream: Any, by_actor: Any) -> Any:
        """One try at the leader: over its stream, or by actor calls when it serves none."""
        stream = await self._leader_stream(timeout)
        if stream is None:
            with _retry_elsewhere_on_ray_errors():
                return await by_actor(await self._leader_handle(timeout))
        try:
            return await by_stream(stream)
        except RetryElsewhere:
            if self._leader is not None:  # a restarted replica serves on another port
                self._shared().endpoints.pop(self._leader, None)
            raise
        except StreamNotServed:
            if self._leader is not None:
                self._shared().endpoints[self._leader] = None
            raise RetryElsewhere("the replica serves no leader stream; asking by actor calls") from None

    async def _propose_once(self, data: bytes, timeout: float) -> tuple[str, Any]:
        outcome: tuple[str, Any] = await self._at_the_leader(
            timeout,
            lambda stream: stream.propose(data, min(timeout, 5.0)),
            lambda handle: replica_calls.propose(handle, data),
        )
        return outcome

    async def _query_once(self, name: str, args: dict[str, Any] | None, timeout: float) -> Any:
        return await self._at_the_leader(
            timeout,
            lambda stream: stream.query(name, args, "linearizable", min(timeout, 5.0)),
            lambda handle: replica_calls.query(handle, name, args, "linearizable"),
        )

    async def query(
        self, name: str, args: dict[str, Any] | None = None, consistency: str = "linearizable", timeout: float = 15.0
    ) -> Any:
        """A named query (state/queries.py). "linearizable" asks the leader after a ReadIndex
        barrier; "stale" reads whichever replica answers first, however far behind."""
        if consistency not in ("linearizable", "stale"):
            raise ValueError(f"consistency must be 'linearizable' or 'stale', got {consistency!r}")
        if consistency == "stale":
            return await next(iter(self.replicas.values())).query.remote(name, args, "stale")
        return await self.read(name, args, timeout)

    async def watch(self, from_index: int, kinds: list[str] | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """Changes after `from_index` from the leader's change feed (long poll)."""
        try:
            handle = await self._leader_handle(timeout)
        except RetryElsewhere as exc:
            raise TimeoutError(str(exc)) from None
        answer: dict[str, Any] = await handle.watch.remote(from_index, kinds, timeout)
        return answer

    async def checkpoint_digests(self, index: int) -> dict[str, dict[str, str] | None]:
        """Each replica's table digests at checkpoint `index` (None: not there yet, or down)."""
        results = await asyncio.gather(
            *(h.checkpoint_digests.remote(index) for h in self.replicas.values()), return_exceptions=True
        )
        return {str(r): d if isinstance(d, dict) else None for r, d in zip(self.replicas, results, strict=True)}

    async def status(self) -> list[dict[str, Any]]:
        results = await asyncio.gather(*(h.status.remote() for h in self.replicas.values()), return_exceptions=True)
        return [r if isinstance(r, dict) else {"error": f"{type(r).__name__}: {r}"} for r in results]


async def propose_to_leader(replicas: dict[int, Any], command: bytes, timeout: float = 15.0) -> Any:
    """Send prepared command bytes to the group's leader, following redirects and waiting out
    elections (no (session, seq) is added: the bytes go as they are)."""
    return await ControlPlane("ad-hoc", replicas).propose(command, timeout)
