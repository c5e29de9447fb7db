"""The Python SDK: ControlPlane finds a group's replicas by their actor names, sends fleet
commands to the leader (following NotLeader answers and waiting out elections), and
retries with the same (session, seq) so a command is applied once even when an answer
is lost. Queries are linearizable (ReadIndex on the leader) or explicitly stale; watch()
follows the change feed from a log index."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from controlplane import replica_calls
from controlplane.actors import NAMESPACE, find_leader, group_replicas
from controlplane.raft import RaftError
from controlplane.session import ClientSession, keyed_command
from controlplane.state.fleet import validate


def attach(address: str = "auto") -> None:
    """Join a running Ray cluster in the control plane's namespace (once per process);
    ConnectionError naming the address when there is none."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, namespace=NAMESPACE, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError) as exc:
        raise ConnectionError(f"no Ray cluster at {address!r}: {exc}") from None


class ControlPlaneError(Exception):
    pass


class OutcomeUnknown(ControlPlaneError, TimeoutError):
    """No answer in time: the command may or may not have been applied. Retrying the same
    command with the same idempotency key is safe; without one it may apply twice."""


class ControlPlane:
    def __init__(self, group: str, replicas: dict[int, Any]) -> None:
        if not replicas:
            raise ControlPlaneError(f"group {group!r} has no replicas")
        self.group = group
        self.replicas = replicas
        self.session = ClientSession()
        self._leader: int | None = None

    @classmethod
    def connect(cls, group: str, address: str = "auto") -> ControlPlane:
        """Attach to Ray (address "auto": the running cluster) and find the group's replicas."""
        attach(address)
        replicas = group_replicas(group)
        if not replicas:
            raise ControlPlaneError(f"no replicas of group {group!r} in namespace {NAMESPACE!r}; deploy it first")
        return cls(group, replicas)

    async def _leader_handle(self, timeout: float) -> Any:
        if self._leader is None:
            self._leader = await find_leader(self.replicas, timeout)
        return self.replicas[self._leader]

    async def propose(self, data: bytes, timeout: float = 15.0) -> dict[str, Any]:
        """Send command bytes to the leader until it answers, the same bytes each try (safe
        when they carry a (client, seq) the state remembers). OutcomeUnknown when time runs
        out: the command may or may not have been applied."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: Exception | None = None
        while loop.time() < deadline:
            try:
                handle = await self._leader_handle(max(0.1, deadline - loop.time()))
                outcome, answer = await replica_calls.propose(handle, data)
                if outcome == "ok":
                    return dict(answer)
                last = RuntimeError(answer)
            except ray.exceptions.RayTaskError as exc:
                if not isinstance(exc.cause, RaftError | TimeoutError):
                    raise
                last = exc
            except (ray.exceptions.RayActorError, TimeoutError) as exc:
                last = exc
            self._leader = None
            await asyncio.sleep(0.05)
        raise OutcomeUnknown(f"no answer within {timeout}s ({last}): the command may or may not have been applied")

    async def command(
        self, command: dict[str, Any], timeout: float = 15.0, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """A fleet command (state/fleet.py COMMANDS), validated here first (CommandError names
        the field), applied exactly once. The answer says ok or why not (conflicts included);
        `session.outcome(answer)` tells applied, refused or unknown. With an idempotency key
        the command is its own session: a retry with the same key, from this process or any
        other, is applied once (for as long as the state remembers sessions)."""
        if idempotency_key is not None:
            return await self.propose(keyed_command(command, idempotency_key), timeout)
        validate({**command})  # a bad command is refused before a session is opened for it
        await self.session.ensure_open(lambda data: self.propose(data, timeout))
        seq, data = self.session.command(command)
        answer: dict[str, Any] | None = None
        try:
            answer = await self.propose(data, timeout)
            return answer
        finally:
            self.session.done(seq, answer)

    async def query(
        self, name: str, args: dict[str, Any] | None = None, consistency: str = "linearizable", timeout: float = 15.0
    ) -> Any:
        """A named query (state/queries.py). "linearizable" asks the leader after a ReadIndex
        barrier; "stale" reads whichever replica answers first, however far behind."""
        if consistency not in ("linearizable", "stale"):
            raise ValueError(f"consistency must be 'linearizable' or 'stale', got {consistency!r}")
        if consistency == "stale":
            return await next(iter(self.replicas.values())).query.remote(name, args, "stale")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                handle = await self._leader_handle(max(0.1, deadline - loop.time()))
                return await replica_calls.query(handle, name, args, "linearizable")
            except ray.exceptions.RayTaskError as exc:
                if not isinstance(exc.cause, RaftError | TimeoutError) or loop.time() > deadline:
                    raise
            except (ray.exceptions.RayActorError, TimeoutError):
                if loop.time() > deadline:
                    raise
            self._leader = None
            await asyncio.sleep(0.05)

    async def watch(self, from_index: int, kinds: list[str] | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """Changes after `from_index` from the leader's change feed (long poll)."""
        handle = await self._leader_handle(timeout)
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
