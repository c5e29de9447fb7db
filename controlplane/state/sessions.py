"""Exactly-once for clients that pipeline (Raft dissertation §6.3, as LogCabin does).

A command carries its client's id, its `seq` and the client's `ack`: the lowest seq whose
answer the client still waits for. A session remembers the answer of every seq at or above
its floor (the highest ack seen); a retry of a remembered seq gets its original answer, a
seq below the floor or of a forgotten session gets a distinct "expired" answer, never a
refusal: the command may well have been applied. Sessions are forgotten after
`ttl_entries` log entries without use, and the least recently used go first when there are
more than `max_sessions`, both by log position so every replica forgets the same ones.

A client opens its session first (an `open_session` command, as LogCabin registers
clients): the state names it after the entry's log index, so a name is never used twice and
a session the state does not know is one it forgot. An open_session retried after a lost
answer opens another session, which nobody uses and which expires. Idempotency keys
(`key:<key>` sessions, one command each) are the exception: they start on first use, so a
retry of a key after its session expired (ttl_entries later) applies again, as keys expire
in HTTP's Idempotency-Key draft.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from controlplane import bugs

SESSION_TTL_ENTRIES = 1_000_000
MAX_SESSIONS = 200_000
# Answers kept per session beyond what the client acknowledged: a client pipelining more
# than this loses exactly-once for its oldest commands (it gets "expired" for them).
MAX_ANSWERS = 4096
SESSION_FIELDS = ("client", "seq", "ack")
KEYED = "key:"  # sessions named by an idempotency key, started on first use


@dataclass
class Session:
    floor: int = 1  # every seq below was acknowledged by the client (or forgotten)
    used: int = 0  # log index of the last command
    answers: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # seq -> (digest, answer)


@dataclass(frozen=True)
class Seen:
    """What the session says about a command before it is applied."""

    kind: str  # "new", "duplicate" (answer is the original), "expired", "reused", "older"
    answer: dict[str, Any] | None = None
    reason: str = ""


NEW = Seen("new")


def entry_digest(data: bytes) -> str:
    """What a seq stands for: the entry's bytes (a retry resends the very same bytes)."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


class Sessions:
    def __init__(
        self,
        *,
        ttl_entries: int = SESSION_TTL_ENTRIES,
        max_sessions: int = MAX_SESSIONS,
        max_answers: int = MAX_ANSWERS,
    ) -> None:
        if ttl_entries < 1 or max_sessions < 1 or max_answers < 1:
            raise ValueError("ttl_entries, max_sessions and max_answers must be positive")
        self.ttl_entries = ttl_entries
        self.max_sessions = max_sessions
        self.max_answers = max_answers
        self.by_client: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self.expired_answers = 0

    def __len__(self) -> int:
        return len(self.by_client)

    def open(self, index: int) -> str:
        """A new session, named after the log index of the command that opened it."""
        self.expire(index)
        name = f"s{index}"
        self.by_client[name] = Session(used=index)
        self._evict()
        return name

    def check(self, client: str, seq: int, ack: int, digest: str, index: int) -> Seen:
        """Call once per command, at log index `index`, before applying it, after expire(index)
        (FleetState expires on every entry, session or not)."""
        session = self.by_client.get(client)
        if bugs.enabled("session_last_seq"):
            return self._check_last_seq_only(session, seq)
        if session is None:
            if not client.startswith(KEYED):
                return self._expired(
                    f"session {client!r} is not open (it expired, or was never opened): "
                    f"seq {seq} may or may not have been applied"
                )
            session = self.by_client[client] = Session()
        if ack > session.floor:
            session.floor = ack
            for old in [s for s in session.answers if s < ack]:
                del session.answers[old]
        if seq < session.floor:
            return self._expired(f"seq {seq} is below the session's acknowledged floor {session.floor}")
        remembered = session.answers.get(seq)
        if remembered is None:
            return NEW
        if remembered[0] != digest:
            return Seen("reused", reason=f"seq {seq} of this session was used for a different command")
        return Seen("duplicate", remembered[1])

    def _check_last_seq_only(self, session: Session | None, seq: int) -> Seen:
        """The defect `session_last_seq`: only the last seq is remembered."""
        if session is None or not session.answers:
            return NEW
        last = max(session.answers)
        if seq == last:
            return Seen("duplicate", session.answers[last][1])
        if seq < last:
            return Seen("older", reason=f"{seq} is older than {last}")
        return NEW

    def _expired(self, reason: str) -> Seen:
        self.expired_answers += 1
        return Seen("expired", reason=reason)

    def record(self, client: str, seq: int, digest: str, answer: dict[str, Any], index: int) -> None:
        session = self.by_client.get(client)
        if session is None:
            session = self.by_client[client] = Session()
        if bugs.enabled("session_last_seq"):
            session.answers.clear()
        session.answers[seq] = (digest, answer)
        session.used = index
        self.by_client.move_to_end(client)
        while len(session.answers) > self.max_answers:
            oldest = min(session.answers)
            del session.answers[oldest]
            session.floor = max(session.floor, oldest + 1)
        self._evict()

    def _evict(self) -> None:
        while len(self.by_client) > self.max_sessions:
            self.by_client.popitem(last=False)

    def touch(self, client: str, index: int) -> None:
        session = self.by_client.get(client)
        if session is not None:
            session.used = index
            self.by_client.move_to_end(client)

    def expire(self, index: int) -> None:
        """Forget sessions unused for ttl_entries entries (every entry calls this)."""
        while self.by_client:
            session = next(iter(self.by_client.values()))
            if session.used > index - self.ttl_entries:
                break
            self.by_client.popitem(last=False)

    # --- snapshots --------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(
            [
                [c, s.floor, s.used, [[seq, d, a] for seq, (d, a) in sorted(s.answers.items())]]
                for c, s in self.by_client.items()
            ]
        )

    def load_json(self, text: str) -> None:
        self.by_client = OrderedDict(
            (c, Session(int(floor), int(used), {int(seq): (d, a) for seq, d, a in answers}))
            for c, floor, used, answers in json.loads(text)
        )
