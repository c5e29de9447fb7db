"""The leader's view of one follower: how far it matches, what to send next, and how many
append messages are in flight (the pipelining window)."""

from __future__ import annotations

import enum
from collections import deque

from controlplane.raft.messages import Snapshot


class ProgressState(enum.Enum):
    PROBE = "probe"  # one append at a time until we find where the logs match
    REPLICATE = "replicate"  # optimistic pipelining within the in-flight window
    SNAPSHOT = "snapshot"  # sending a snapshot; appends wait


class Progress:
    __slots__ = (
        "inflight",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "read_ack",
        "recent_active",
        "snapshot",
        "snapshot_idle_ticks",
        "snapshot_offset",
        "state",
    )

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.recent_active = True
        self.inflight: deque[int] = deque()  # last index of each in-flight append
        self.pending_snapshot = 0
        # The snapshot being sent, kept until it is through: a newer one the leader takes
        # meanwhile must not restart a transfer that takes longer than snapshots come.
        self.snapshot: Snapshot | None = None
        self.snapshot_offset = 0
        self.snapshot_idle_ticks = 0
        self.read_ack = 0  # highest ReadIndex heartbeat sequence this peer acknowledged

    def __repr__(self) -> str:
        return f"Progress(match={self.match}, next={self.next}, state={self.state.value})"

    def is_paused(self, max_inflight: int) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) >= max_inflight
        return True

    def maybe_update(self, index: int) -> bool:
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decrease_to(self, rejected: int, hint: int) -> bool:
        """Handle a rejected append; False when the rejection is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        next_index = max(min(rejected, hint + 1), self.match + 1, 1)
        if next_index == self.next:
            # The follower rejects below what it acknowledged (its disk lost synced data):
            # retrying at once would spin; wait for the next heartbeat instead.
            return False
        self.next = next_index
        self.probe_sent = False
        return True

    def free_up_to(self, index: int) -> None:
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight.clear()
        self.pending_snapshot = 0
        self.snapshot = None

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.inflight.clear()

    def become_snapshot(self, snapshot: Snapshot) -> None:
        self.state = ProgressState.SNAPSHOT
        self.snapshot = snapshot
        self.pending_snapshot = snapshot.meta.index
        self.snapshot_offset = 0
        self.snapshot_idle_ticks = 0
        self.inflight.clear()
