"""A key-value register store: the state machine of the demo until the fleet state lands.
Commands are JSON: {"op": "put", "key": str, "value": any} or {"op": "delete", "key": str},
optionally with "client" (str) and "seq" (int): a command whose (client, seq) was already
applied returns the first answer instead of applying again (exactly-once, as LogCabin does).
A malformed command is rejected deterministically on every replica, never a crash."""

from __future__ import annotations

import json
from typing import Any

from controlplane.raft.messages import Entry


def put(key: str, value: Any, client: str | None = None, seq: int | None = None) -> bytes:
    cmd: dict[str, Any] = {"op": "put", "key": key, "value": value}
    if client is not None:
        cmd["client"], cmd["seq"] = client, seq
    return json.dumps(cmd, sort_keys=True).encode()


class Registers:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.sessions: dict[str, tuple[int, dict[str, Any]]] = {}  # client -> (last seq, answer)
        self.rejected = 0
        self.duplicates = 0

    def apply(self, entry: Entry) -> dict[str, Any]:
        try:
            cmd = json.loads(entry.data)
        except ValueError as exc:
            self.rejected += 1
            return {"ok": False, "index": entry.index, "error": f"not JSON: {exc}"}
        client, seq = cmd.get("client") if isinstance(cmd, dict) else None, None
        if client is not None:
            seq = cmd.get("seq")
            if not isinstance(client, str) or not isinstance(seq, int) or seq < 1:
                self.rejected += 1
                return {"ok": False, "index": entry.index, "error": "client must be a string and seq a positive int"}
            last = self.sessions.get(client)
            if last is not None and seq <= last[0]:
                self.duplicates += 1
                if seq == last[0]:
                    return last[1]  # a retry of the last command: the first answer again
                return {"ok": False, "index": entry.index, "error": f"seq {seq} is older than {last[0]}"}
        answer = self._apply_command(cmd, entry.index)
        if client is not None and seq is not None:
            self.sessions[client] = (seq, answer)
        return answer

    def _apply_command(self, cmd: Any, index: int) -> dict[str, Any]:
        try:
            op, key = cmd["op"], cmd["key"]
            if not isinstance(key, str):
                raise TypeError("key must be a string")
            if op == "put":
                self.data[key] = cmd["value"]
            elif op == "delete":
                self.data.pop(key, None)
            else:
                raise ValueError(f"unknown op {op!r}")
        except (ValueError, KeyError, TypeError) as exc:
            self.rejected += 1
            return {"ok": False, "index": index, "error": str(exc)}
        return {"ok": True, "index": index}

    def snapshot(self) -> bytes:
        sessions = {c: [seq, answer] for c, (seq, answer) in self.sessions.items()}
        return json.dumps({"data": self.data, "sessions": sessions}, sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        state = json.loads(data) if data else {}
        self.data = state.get("data", {})
        self.sessions = {c: (int(seq), answer) for c, (seq, answer) in state.get("sessions", {}).items()}
