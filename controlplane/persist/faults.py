"""Disk faults for chaos runs: a storage wrapper whose next fsync fails with EIO when the
fault plan (rpc/faults.py, UAV_FAULTS_FILE) names this replica in `disk_error`. Off unless
the plan file says so; it fires once per change of the file made after this process
started, so the replica that Ray restarts from its disk runs clean."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Mapping
from pathlib import Path

from controlplane.node import NodeStorage
from controlplane.raft.messages import Ready, Snapshot
from controlplane.rpc.faults import PlanSource


class FaultyStorage:
    def __init__(self, inner: NodeStorage, replica: int, plans: PlanSource) -> None:
        self.inner = inner
        self.replica = replica
        self.plans = plans
        self._started_ns = time.time_ns()
        self._fired_for = 0

    def _maybe_fail(self) -> None:
        changed = self.plans.changed_at_ns
        if self.replica in self.plans.current().disk_errors and changed > max(self._started_ns, self._fired_for):
            self._fired_for = changed
            raise OSError(errno.EIO, f"injected disk error on replica {self.replica} (fault plan)")

    def bootstrap(self, founders: list[int]) -> None:
        self.inner.bootstrap(founders)

    def load(self) -> object:
        return self.inner.load()

    def record_peers_heard(self, peers: frozenset[int]) -> None:
        self.inner.record_peers_heard(peers)

    def persist(self, rd: Ready) -> None:
        if rd.must_sync():
            self._maybe_fail()
        self.inner.persist(rd)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self.inner.save_snapshot(snapshot)

    def compact_log(self, through_index: int) -> None:
        self.inner.compact_log(through_index)

    def close(self) -> None:
        self.inner.close()


def with_disk_faults(inner: NodeStorage, replica: int, env: Mapping[str, str] | None = None) -> NodeStorage:
    """`inner` wrapped when UAV_FAULTS_FILE is set; `inner` itself otherwise."""
    env = os.environ if env is None else env
    if env.get("UAV_FAULTS_FILE"):
        return FaultyStorage(inner, replica, PlanSource(path=Path(env["UAV_FAULTS_FILE"])))
    return inner
