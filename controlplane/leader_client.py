"""The client side of a group, whatever carries the calls: exactly-once commands (a session,
the same bytes on every retry) and linearizable queries sent to the leader, found again
after a redirect, a dead leader or an election. client.ControlPlane reaches replicas as Ray
actors; node_client.NodeGroup reaches standalone nodes by address. Nothing here imports
the replica's modules or Ray.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Any

from controlplane.session import ClientSession, keyed_command
from controlplane.state.commands import validate

RETRY_PAUSE = 0.05  # seconds between tries while the leader is found again


class ControlPlaneError(Exception):
    pass


class OutcomeUnknown(ControlPlaneError, TimeoutError):
    """No answer in time: the command may or may not have been applied. Retrying the same
    command with the same idempotency key is safe; without one it may apply twice."""


class RetryElsewhere(Exception):
    """The replica asked is not (or no longer) the leader, or did not answer: nothing is known
    about the call's outcome, and the same bytes may go to the leader found next."""


class LeaderClient(abc.ABC):
    def __init__(self) -> None:
        self.session = ClientSession()

    @abc.abstractmethod
    async def _propose_once(self, data: bytes, timeout: float) -> tuple[str, Any]:
        """One try at the leader: ("ok", answer) or ("retry", why); RetryElsewhere when the
        replica asked cannot answer."""

    @abc.abstractmethod
    async def _query_once(self, name: str, args: dict[str, Any] | None, timeout: float) -> Any:
        """One linearizable read; RetryElsewhere when the replica asked cannot answer; the
        query's own errors (CommandError, NotFoundError) as they are."""

    @abc.abstractmethod
    def _leader_lost(self) -> None:
        """Forget the leader: the next try looks for it again."""

    async def propose(self, data: bytes, timeout: float = 15.0) -> dict[str, Any]:
        """Send command bytes to the leader until it answers, the same bytes each try (safe
        when they carry a (client, seq) the state remembers). OutcomeUnknown when time runs
        out: the command may or may not have been applied."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: BaseException | None = None
        while loop.time() < deadline:
            try:
                outcome, answer = await self._propose_once(data, max(0.1, deadline - loop.time()))
                if outcome == "ok":
                    return dict(answer)
                last = RuntimeError(answer)
            except RetryElsewhere as exc:
                last = exc.__cause__ or exc
            self._leader_lost()
            await asyncio.sleep(RETRY_PAUSE)
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
        if self.session.client_id is None:  # once open, the session's encode() validates it
            validate({**command})  # a bad command is refused before a session is opened for it
        await self.session.ensure_open(lambda data: self.propose(data, timeout))
        seq, data = self.session.command(command)
        answer: dict[str, Any] | None = None
        try:
            answer = await self.propose(data, timeout)
            return answer
        finally:
            self.session.done(seq, answer)

    async def read(self, name: str, args: dict[str, Any] | None = None, timeout: float = 15.0) -> Any:
        """A linearizable read, retried on the leader found next until `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                return await self._query_once(name, args, max(0.1, deadline - loop.time()))
            except RetryElsewhere as exc:
                if loop.time() > deadline:
                    raise TimeoutError(f"no linearizable answer within {timeout}s: {exc.__cause__ or exc}") from None
            self._leader_lost()
            await asyncio.sleep(RETRY_PAUSE)
