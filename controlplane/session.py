"""The client side of exactly-once (state/sessions.py is the replicated side).

A ClientSession numbers its commands (seq) and tells the replicas, with every command, the
lowest seq it still waits for (ack), so the state can forget the answers it no longer needs.
Retries resend the same bytes. The SDK, the HTTP API and the simulator's clients all use it.

`outcome()` reads a state-machine answer the one honest way: applied, refused (nothing was
applied), or unknown (expired session, or a failure inside apply): never a refusal when the
command may have been applied.
"""

from __future__ import annotations

import itertools
from typing import Any

from controlplane.state.fleet import encode
from controlplane.state.model import CommandError

APPLIED, REFUSED, UNKNOWN = "applied", "refused", "unknown"


class ClientSession:
    def __init__(self, client_id: str) -> None:
        if not client_id:
            raise ValueError("client_id must be non-empty")
        self.client_id = client_id
        self._seqs = itertools.count(1)
        self._waiting: set[int] = set()
        self._answered = False  # an answer from the replicated state proves the session exists

    def command(self, command: dict[str, Any]) -> tuple[int, bytes]:
        """A new seq for `command` and the bytes to propose (and to resend on retries).
        Raises CommandError naming the field when the command is invalid."""
        seq = next(self._seqs)
        self._waiting.add(seq)
        try:
            fields: dict[str, Any] = {"client": self.client_id, "seq": seq, "ack": min(self._waiting)}
            if self._answered:
                fields["answered"] = True
            return seq, encode({**command, **fields})
        except Exception:
            self._waiting.discard(seq)
            raise

    def done(self, seq: int, answer: dict[str, Any] | None = None) -> None:
        """The answer to seq arrived (or the caller gave up on it, answer None): the state
        may forget it."""
        self._waiting.discard(seq)
        if answer is not None and not answer.get("expired"):
            self._answered = True


MAX_KEY = 200


def keyed_command(command: dict[str, Any], key: str) -> bytes:
    """A command that is its own session, named by an idempotency key (HTTP's Idempotency-Key):
    every retry with the key, from any client process, is the same (client, seq)."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY or not key.isprintable() or not key.isascii():
        raise CommandError("Idempotency-Key", f"must be 1 to {MAX_KEY} printable ASCII characters")
    return encode({**command, "client": f"key:{key}", "seq": 1, "ack": 1})


def outcome(answer: dict[str, Any]) -> str:
    """APPLIED, REFUSED or UNKNOWN for a state machine's answer to a command."""
    if answer.get("ok"):
        return APPLIED
    if answer.get("expired") or answer.get("internal"):
        return UNKNOWN
    return REFUSED
