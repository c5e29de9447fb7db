"""DataSynchronizer: the seed's API over the replicated fleet state.

A station application keeps a local view of missions, UAVs and groups. `sync_mission`,
`sync_uav` and `sync_group` push one local change through Raft (create / update / delete;
an update carries the version the application last saw, so a concurrent change elsewhere is
a conflict, not a silent overwrite). `sync_all_missions` / `sync_all_uavs` /
`sync_all_groups` reload the whole view from the leader. `start_sync_service()` keeps the
view current incrementally from the change feed (no full re-sends) and replaces the seed's
60-second full sync by a periodic digest comparison of every replica's tables: the leader
applies a checkpoint command, each replica hashes its tables at that log index, and any
difference is reported loudly (it must never happen).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

OPS = ("create", "update", "delete")


class FleetClient(Protocol):
    """What the synchronizer needs from the SDK (client.ControlPlane)."""

    async def command(
        self, command: dict[str, Any], timeout: float = ..., *, idempotency_key: str | None = ...
    ) -> dict[str, Any]: ...

    async def query(
        self, name: str, args: dict[str, Any] | None = ..., consistency: str = ..., timeout: float = ...
    ) -> Any: ...

    async def watch(self, from_index: int, kinds: list[str] | None = ..., timeout: float = ...) -> dict[str, Any]: ...

    async def checkpoint_digests(self, index: int) -> dict[str, dict[str, str] | None]:
        """Each replica's table digests at checkpoint `index` (None: not applied there yet)."""


@dataclass
class DigestReport:
    index: int
    digests: dict[str, dict[str, str]]  # replica -> table -> digest
    diverged: list[str] = field(default_factory=list)  # tables whose digests differ
    missing: list[str] = field(default_factory=list)  # replicas that could not answer in time

    @property
    def ok(self) -> bool:
        return not self.diverged


class DataSynchronizer:
    def __init__(
        self,
        client: FleetClient,
        *,
        reconcile_interval: float = 60.0,
        watch_timeout: float = 5.0,
    ) -> None:
        if reconcile_interval <= 0:
            raise ValueError(f"reconcile_interval must be positive, got {reconcile_interval}")
        self.client = client
        self.reconcile_interval = reconcile_interval
        self.watch_timeout = watch_timeout
        self.missions: dict[str, dict[str, Any]] = {}
        self.uavs: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.index = 0  # the log index the local view reflects
        self.resets = 0
        self.reports: list[DigestReport] = []
        self._tasks: list[asyncio.Task[None]] = []

    # --- pushing local changes ----------------------------------------------------------------

    async def sync_mission(self, mission_id: str, op: str, record: dict[str, Any] | None = None) -> dict[str, Any]:
        """create: record has waypoints (+ priority, min_battery); update: record has status
        (a transition); delete. The local view's version is the expected one."""
        fields = self._fields(op, record)
        kind = {"create": "create_mission", "update": "set_mission_status", "delete": "delete_mission"}[op]
        return await self._push(op, {"type": kind, "mission": mission_id, **fields}, self.missions.get(mission_id))

    async def sync_uav(self, uav_id: str, op: str, record: dict[str, Any] | None = None) -> dict[str, Any]:
        """create: record has home_station (+ battery, lat, lon, alt); update: any of status,
        battery, lat, lon, alt, vx, vy, vz; delete."""
        fields = self._fields(op, record)
        kind = {"create": "register_uav", "update": "update_uav", "delete": "delete_uav"}[op]
        return await self._push(op, {"type": kind, "uav": uav_id, **fields}, self.uavs.get(uav_id))

    async def sync_group(self, group_id: str, op: str, record: dict[str, Any] | None = None) -> dict[str, Any]:
        """create; update: record {"add": uav} or {"remove": uav}; delete (dissolve)."""
        fields = self._fields(op, record)
        if op == "create":
            cmd: dict[str, Any] = {"type": "create_group", "group": group_id}
        elif op == "delete":
            cmd = {"type": "dissolve_group", "group": group_id}
        elif set(fields) - {"expected_version"} in ({"add"}, {"remove"}):
            action = "add" if "add" in fields else "remove"
            cmd = {"type": f"{action}_member", "group": group_id, "uav": fields.pop(action), **fields}
        else:
            raise ValueError(f"a group update needs exactly one of 'add' or 'remove', got {sorted(fields)}")
        return await self._push(op, cmd, self.groups.get(group_id))

    @staticmethod
    def _fields(op: str, record: dict[str, Any] | None) -> dict[str, Any]:
        """The command's fields from a record: its id dropped, its version the expected one."""
        if op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {op!r}")
        fields = {k: v for k, v in (record or {}).items() if k not in ("id", "version")}
        if record and "version" in record and op != "create":
            fields["expected_version"] = record["version"]
        return fields

    async def _push(self, op: str, cmd: dict[str, Any], local: dict[str, Any] | None) -> dict[str, Any]:
        if op != "create" and "expected_version" not in cmd and local is not None:
            cmd["expected_version"] = local["version"]  # what this station last saw
        return await self.client.command(cmd)

    # --- pulling ------------------------------------------------------------------------------

    async def sync_all_missions(self) -> int:
        return await self._reload("missions", self.missions)

    async def sync_all_uavs(self) -> int:
        return await self._reload("uavs", self.uavs)

    async def sync_all_groups(self) -> int:
        return await self._reload("groups", self.groups)

    async def _reload(self, query: str, view: dict[str, dict[str, Any]]) -> int:
        """Replace the local view by the leader's (linearizable); returns how many records changed."""
        counters = await self.client.query("counters")
        records = {r["id"]: r for r in await self.client.query(query)}
        changed = sum(1 for k in records.keys() | view.keys() if records.get(k) != view.get(k))
        view.clear()
        view.update(records)
        self.index = max(self.index, int(counters["applied_index"]))
        return changed

    def _apply_change(self, change: dict[str, Any]) -> None:
        view = {"mission": self.missions, "uav": self.uavs, "group": self.groups}.get(change["kind"])
        if view is None:
            return
        if change["record"] is None:
            view.pop(change["id"], None)
        else:
            view[change["id"]] = change["record"]

    async def poll_changes(self) -> int:
        """One long poll of the change feed; returns how many changes were applied locally."""
        answer = await self.client.watch(self.index, ["mission", "uav", "group"], self.watch_timeout)
        if answer["reset"]:
            self.resets += 1
            self.missions.clear()
            self.uavs.clear()
            self.groups.clear()
        for change in answer["changes"]:
            self._apply_change(change)
        self.index = max(self.index, int(answer["index"]))
        return len(answer["changes"])

    # --- checking -----------------------------------------------------------------------------

    async def compare_digests(self, timeout: float = 10.0) -> DigestReport:
        """Checkpoint the tables at one log index on every replica and compare the hashes."""
        answer = await self.client.command({"type": "checkpoint"})
        index = int(answer["index"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            got = await self.client.checkpoint_digests(index)
            if all(d is not None for d in got.values()) or loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
        digests = {r: d for r, d in got.items() if d is not None}
        tables = sorted({t for d in digests.values() for t in d})
        report = DigestReport(
            index,
            digests,
            diverged=[t for t in tables if len({d.get(t) for d in digests.values()}) > 1],
            missing=sorted(r for r, d in got.items() if d is None),
        )
        if report.diverged:
            log.error("replica state DIVERGED at log index %d in tables %s: %s", index, report.diverged, digests)
        self.reports.append(report)
        del self.reports[:-100]
        return report

    # --- the service --------------------------------------------------------------------------

    async def start_sync_service(self) -> None:
        """Load the views, then follow the change feed and compare digests periodically."""
        if self._tasks:
            return
        await self.sync_all_missions()
        await self.sync_all_uavs()
        await self.sync_all_groups()
        self._tasks = [asyncio.create_task(self._follow()), asyncio.create_task(self._reconcile())]

    async def _follow(self) -> None:
        while True:
            try:
                await self.poll_changes()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must outlive elections and restarts
                log.warning("change feed: %s; retrying", exc)
                await asyncio.sleep(0.5)

    async def _reconcile(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_interval)
            try:
                await self.compare_digests()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("digest comparison failed: %s", exc)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
