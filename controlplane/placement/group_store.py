"""The placement map in the group's own replicated state (state/control_kv.py): it needs no
extra service, survives the controller's restart and the loss of any one station, and is
written with compare-and-set like the discovery backends' KV. A write whose outcome is
unknown raises (OutcomeUnknown); the planner's next pass reads the map again."""

from __future__ import annotations

from typing import Any, Protocol

from controlplane.placement.discovery import KVEntry
from controlplane.placement.planner import PlacementError


class FleetClient(Protocol):
    async def command(self, command: dict[str, Any]) -> dict[str, Any]: ...

    async def query(self, name: str, args: dict[str, Any] | None = None) -> Any: ...


class GroupStateStore:
    def __init__(self, client: FleetClient) -> None:
        self.client = client

    async def kv_get(self, key: str) -> KVEntry | None:
        record = await self.client.query("control_kv", {"key": key})
        if record is None:
            return None
        return KVEntry(key, record["value"].encode(), int(record["version"]))

    async def kv_cas(self, key: str, value: bytes, expected_version: int) -> KVEntry | None:
        answer = await self.client.command(
            {"type": "control_cas", "key": key, "value": value.decode(), "if_version": expected_version}
        )
        if answer["ok"]:
            return KVEntry(key, value, int(answer["version"]))
        if answer.get("conflict"):
            return None
        raise PlacementError(f"the group refused the placement map write: {answer.get('field')}: {answer.get('error')}")
