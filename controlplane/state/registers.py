"""A key-value register store: the state machine of the demo until the fleet state lands.
Commands are JSON: {"op": "put", "key": str, "value": any} or {"op": "delete", "key": str}.
A malformed command is rejected deterministically on every replica, never a crash."""

from __future__ import annotations

import json
from typing import Any

from controlplane.raft.messages import Entry


def put(key: str, value: Any) -> bytes:
    return json.dumps({"op": "put", "key": key, "value": value}, sort_keys=True).encode()


class Registers:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.rejected = 0

    def apply(self, entry: Entry) -> dict[str, Any]:
        try:
            cmd = json.loads(entry.data)
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
            return {"ok": False, "index": entry.index, "error": str(exc)}
        return {"ok": True, "index": entry.index}

    def snapshot(self) -> bytes:
        return json.dumps(self.data, sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        self.data = json.loads(data) if data else {}
