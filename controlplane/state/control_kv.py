"""The control plane's own small records, kept in the group's replicated state: a versioned
key-value map with compare-and-set. The controller keeps its placement map here when no
Consul or etcd is configured, so the map survives the controller's restart and the loss of
any one station without an extra service. A key's version is the log index that last wrote
it (deterministic on every replica, and it only grows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controlplane.state.model import WHITESPACE, CommandError, ConflictError

MAX_KEY = 256
MAX_VALUE = 64 * 1024  # a placement map of a few replicas is ~100 bytes


@dataclass(frozen=True)
class ControlRecord:
    key: str
    value: str
    version: int

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "version": self.version}


def check_key(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_KEY or WHITESPACE.search(value):
        raise CommandError("key", f"must be a non-empty string without spaces (at most {MAX_KEY} chars), got {value!r}")
    return value


def check_cas(cmd: dict[str, Any]) -> None:
    """The fields of a `control_cas` command, before it is proposed and again on apply."""
    check_key(cmd.get("key"))
    value = cmd.get("value")
    if value is not None and (not isinstance(value, str) or len(value) > MAX_VALUE):
        raise CommandError("value", f"must be a string of at most {MAX_VALUE} characters, or null to delete")
    expected = cmd.get("if_version")
    if isinstance(expected, bool) or not isinstance(expected, int) or not 0 <= expected < 2**63:
        raise CommandError("if_version", "must be the key's current version, or 0 for a key that must not exist")


class ControlKV:
    def __init__(self) -> None:
        self.records: dict[str, ControlRecord] = {}

    def get(self, key: str) -> ControlRecord | None:
        return self.records.get(check_key(key))

    def cas(self, key: str, value: str | None, if_version: int, index: int) -> ControlRecord | None:
        """Write (or with value None, delete) only if the key is at `if_version` (0: absent).
        A mismatch is a ConflictError and changes nothing."""
        current = self.records.get(key)
        version = 0 if current is None else current.version
        if version != if_version:
            raise ConflictError("if_version", f"key {key!r} is at version {version}, not {if_version}")
        if value is None:
            self.records.pop(key, None)
            return None
        record = ControlRecord(key, value, index)
        self.records[key] = record
        return record

    def rows(self) -> list[ControlRecord]:
        return [self.records[k] for k in sorted(self.records)]

    def load(self, rows: list[ControlRecord]) -> None:
        self.records = {r.key: r for r in rows}
