"""The pure Raft consensus core."""

from controlplane.raft.core import (
    NotLeaderError,
    Proposal,
    ProposalRejected,
    RaftConfig,
    RaftCore,
    RaftError,
    Status,
    initial_entries,
)
from controlplane.raft.messages import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)

__all__ = [
    "ConfChange",
    "ConfChangeOp",
    "ConfState",
    "Entry",
    "EntryKind",
    "HardState",
    "Message",
    "NotLeaderError",
    "Proposal",
    "ProposalRejected",
    "RaftConfig",
    "RaftCore",
    "RaftError",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "Status",
    "initial_entries",
]
