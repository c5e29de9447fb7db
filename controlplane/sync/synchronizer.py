"""DataSynchronizer: the seed's API over the replicated fleet state.

    synchronizer = DataSynchronizer(raft_node, resource_manager, mission_scheduler)

A station application keeps local managers of UAVs (the resource manager), missions (the
mission scheduler) and groups: any mutable mapping of id -> record (a dict will do). The
synchronizer's first argument reaches the group: an SDK client (client.ControlPlane,
node_client.NodeGroup) or a node that has one (`fleet_client`, as standalone nodes do).

`sync_mission(id, op)`, `sync_uav` and `sync_group` push one local change through Raft
(create / update / delete), reading the record from the local manager unless one is given;
an update carries the version the station last saw, so a concurrent change elsewhere is a
conflict, not a silent overwrite. `sync_all_missions` / `sync_all_uavs` / `sync_all_groups`
reload a manager from the leader. `start_sync_service()` keeps the managers current
incrementally from the change feed (no full re-sends), and every `reconcile_interval` (60 s,
as the seed) reconciles them with the replicated state, repairing and reporting what drifted
(`ReconcileReport`), and compares every replica's tables by digest: the leader applies a
checkpoint command, each replica hashes its tables at that log index, and any difference is
reported loudly (it must never happen).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

OPS = ("create", "update", "delete")
Records = MutableMapping[str, dict[str, Any]]
KINEMATIC_FIELDS = ("battery", "lat", "lon", "alt", "vx", "vy", "vz")
# The fields a command takes from a local manager's record (the rest, like a mission's
# assigned UAV, belong to the replicated state).
FROM_RECORD: dict[tuple[str, str], tuple[str, ...]] = {
    ("mission", "create"): ("waypoints", "priority", "min_battery"),
    ("mission", "update"): ("status",),
    ("uav", "create"): ("home_station", *KINEMATIC_FIELDS),
    ("uav", "update"): ("status", *KINEMATIC_FIELDS),
    ("group", "create"): (),
}


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


@dataclass
class ReconcileReport:
    """What a reconciliation found different in the local managers, and repaired."""

    index: int  # the leader's applied index when the state was read
    added: dict[str, list[str]] = field(default_factory=dict)  # kind -> ids missing locally
    removed: dict[str, list[str]] = field(default_factory=dict)  # kind -> ids gone from the group
    changed: dict[str, list[str]] = field(default_factory=dict)  # kind -> ids whose record differed

    @property
    def repaired(self) -> int:
        return sum(len(ids) for part in (self.added, self.removed, self.changed) for ids in part.values())


def as_fleet_client(raft_node_or_client: Any) -> FleetClient:
    """An SDK client as it is, or the client a node carries (`fleet_client`)."""
    needed = ("command", "query", "watch", "checkpoint_digests")
    if all(callable(getattr(raft_node_or_client, name, None)) for name in needed):
        return raft_node_or_client  # type: ignore[no-any-return]
    inner = getattr(raft_node_or_client, "fleet_client", None)
    if inner is not None:
        return as_fleet_client(inner)
    raise TypeError(
        f"DataSynchronizer needs an SDK client (ControlPlane, NodeGroup) or a node with a fleet_client, "
        f"got {type(raft_node_or_client).__name__}"
    )


def _check_manager(name: str, manager: Any) -> Records:
    if not isinstance(manager, MutableMapping):
        raise TypeError(
            f"{name} must be a mutable mapping of id -> record (a dict will do), got {type(manager).__name__}"
        )
    return manager


class DataSynchronizer:
    def __init__(
        self,
        raft_node_or_client: Any,
        resource_manager: Records | None = None,
        mission_scheduler: Records | None = None,
        group_manager: Records | None = None,
        *,
        reconcile_interval: float = 60.0,
        watch_timeout: float = 5.0,
    ) -> None:
        if reconcile_interval <= 0:
            raise ValueError(f"reconcile_interval must be positive, got {reconcile_interval}")
        self.client = as_fleet_client(raft_node_or_client)
        self.reconcile_interval = reconcile_interval
        self.watch_timeout = watch_timeout
        self.uavs = _check_manager("resource_manager", {} if resource_manager is None else resource_manager)
        self.missions = _check_manager("mission_scheduler", {} if mission_scheduler is None else mission_scheduler)
        self.groups = _check_manager("group_manager", {} if group_manager is None else group_manager)
        self.index = 0  # the log index the local managers reflect
        self.resets = 0
        self.reports: list[DigestReport] = []
        self.reconciliations: list[ReconcileReport] = []
        self._view_lock = asyncio.Lock()  # one writer of the managers at a time: feed or reload
        self._tasks: list[asyncio.Task[None]] = []

    # --- pushing local changes ----------------------------------------------------------------

    async def sync_mission(self, mission_id: str, op: str, record: dict[str, Any] | None = None) -> dict[str, Any]:
        """create: record has waypoints (+ priority, min_battery); update: record has status
        (a transition); delete. Without a record, the mission scheduler's is used. The local
        version is the expected one."""
        fields = self._fields(op, self._record("mission", self.missions, mission_id, op, record))
        kind = {"create": "create_mission", "update": "set_mission_status", "delete": "delete_mission"}[op]
        return await self._push(op, {"type": kind, "mission": mission_id, **fields}, self.missions.get(mission_id))

    async def sync_uav(self, uav_id: str, op: str, record: dict[str, Any] | None = None) -> dict[str, Any]:
        """create: record has home_station (+ battery, lat, lon, alt); update: any of status,
        battery, lat, lon, alt, vx, vy, vz; delete. Without a record, the resource manager's."""
        fields = self._fields(op, self._record("uav", self.uavs, uav_id, op, record))
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
    def _record(
        kind: str, manager: Records, record_id: str, op: str, given: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The record to push: the one given, else the local manager's (its relevant fields
        and version); KeyError naming the manager when it has none to create or update."""
        if op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {op!r}")
        if given is not None or op == "delete":
            return given
        local = manager.get(record_id)
        if local is None:
            raise KeyError(
                f"no {kind} {record_id!r} in the local {'mission scheduler' if kind == 'mission' else 'manager'}"
            )
        picked = {k: local[k] for k in FROM_RECORD[(kind, op)] if k in local and local[k] is not None}
        if "version" in local and op != "create":
            picked["version"] = local["version"]
        return picked

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

    async def _reload(self, query: str, view: Records) -> int:
        """Replace a local manager's records by the leader's (linearizable); returns how many
        records changed."""
        _, drift = await self._reload_view(query, view)
        return sum(len(ids) for ids in drift)

    async def _reload_view(self, query: str, view: Records) -> tuple[int, tuple[list[str], list[str], list[str]]]:
        counters = await self.client.query("counters")
        records = {r["id"]: r for r in await self.client.query(query)}
        async with self._view_lock:
            added = sorted(records.keys() - view.keys())
            removed = sorted(view.keys() - records.keys())
            changed = sorted(k for k in records.keys() & view.keys() if records[k] != view[k])
            for key in removed:
                del view[key]
            for key in added + changed:
                view[key] = records[key]
            index = int(counters["applied_index"])
            self.index = max(self.index, index)
        return index, (added, removed, changed)

    async def reconcile(self) -> ReconcileReport:
        """Compare every local manager with the replicated state, repair what differs, and
        say what that was (records the change feed had not delivered yet count too)."""
        report = ReconcileReport(0)
        for kind, query, view in (("mission", "missions", self.missions), ("uav", "uavs", self.uavs),
                                  ("group", "groups", self.groups)):  # fmt: skip
            index, (added, removed, changed) = await self._reload_view(query, view)
            report.index = max(report.index, index)
            for part, ids in ((report.added, added), (report.removed, removed), (report.changed, changed)):
                if ids:
                    part[kind] = ids
        if report.repaired:
            log.warning("reconciliation repaired %d local records at index %d: added %s, removed %s, changed %s",
                        report.repaired, report.index, report.added, report.removed, report.changed)  # fmt: skip
        self.reconciliations.append(report)
        del self.reconciliations[:-100]
        return report

    def _apply_change_unchecked(self, change: dict[str, Any]) -> None:
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
        async with self._view_lock:
            if answer["reset"]:
                self.resets += 1
                self.missions.clear()
                self.uavs.clear()
                self.groups.clear()
                self.index = 0
            applied = 0
            for change in answer["changes"]:
                if int(change.get("index", self.index + 1)) > self.index or answer["reset"]:
                    self._apply_change_unchecked(change)
                    applied += 1
            self.index = max(self.index, int(answer["index"]))
        return applied

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
                await self.reconcile()
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
