"""The client side of exactly-once (state/sessions.py is the replicated side).

A ClientSession opens a session (the state names it), numbers its commands (seq) and tells
the replicas, with every command, the lowest seq it still waits for (ack), so the state can
forget the answers it no longer needs. Retries resend the same bytes. The SDK, the HTTP API
and the simulator's clients all use it.

`outcome()` reads a state-machine answer the one honest way: applied, refused (nothing was
applied), or unknown (expired session, or a failure inside apply): never a refusal when the
command may have been applied.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from controlplane.state.commands import encode
from controlplane.state.model import CommandError
from controlplane.state.sessions import KEYED

APPLIED, REFUSED, UNKNOWN = "applied", "refused", "unknown"


OPEN_SESSION = encode({"type": "open_session"})


class ClientSession:
    """A client's session: opened once (the state names it), then every command gets the next
    seq. When the state answers that the session expired, the next command opens a new one."""

    def __init__(self) -> None:
        self.client_id: str | None = None
        self._seqs = itertools.count(1)
        self._waiting: set[int] = set()
        self._opening: asyncio.Lock | None = None

    async def ensure_open(self, propose: Callable[[bytes], Awaitable[dict[str, Any]]]) -> None:
        """Open the session if it is not, through `propose` (which resends the same bytes until
        answered). Concurrent callers wait for one opening. A retried open may open a second
        session: it is never used, and expires."""
        if self.client_id is not None:
            return
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self.client_id is None:
                answer = await propose(OPEN_SESSION)
                if not answer.get("ok") or not isinstance(answer.get("session"), str):
                    raise RuntimeError(f"the state did not open a session: {answer}")
                self.client_id = answer["session"]
                self._seqs, self._waiting = itertools.count(1), set()

    def command(self, command: dict[str, Any]) -> tuple[int, bytes]:
        """A new seq for `command` and the bytes to propose (and to resend on retries).
        Raises CommandError naming the field when the command is invalid."""
        if self.client_id is None:
            raise RuntimeError("the session is not open: await ensure_open() first")
        seq = next(self._seqs)
        self._waiting.add(seq)
        try:
            return seq, encode({**command, "client": self.client_id, "seq": seq, "ack": min(self._waiting)})
        except Exception:
            self._waiting.discard(seq)
            raise

    def done(self, seq: int, answer: dict[str, Any] | None = None) -> None:
        """The answer to seq arrived (or the caller gave up on it, answer None): the state
        may forget it. An "expired" answer closes the session: the next command opens one."""
        self._waiting.discard(seq)
        if answer is not None and answer.get("expired"):
            self.client_id = None


MAX_KEY = 200


def keyed_command(command: dict[str, Any], key: str) -> bytes:
    """A command that is its own session, named by an idempotency key (HTTP's Idempotency-Key):
    every retry with the key, from any client process, is the same (client, seq)."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY or not key.isprintable() or not key.isascii():
        raise CommandError("Idempotency-Key", f"must be 1 to {MAX_KEY} printable ASCII characters")
    return encode({**command, "client": f"{KEYED}{key}", "seq": 1, "ack": 1})


def outcome(answer: dict[str, Any]) -> str:
    """APPLIED, REFUSED or UNKNOWN for a state machine's answer to a command."""
    if answer.get("ok"):
        return APPLIED
    if answer.get("expired") or answer.get("internal"):
        return UNKNOWN
    return REFUSED
