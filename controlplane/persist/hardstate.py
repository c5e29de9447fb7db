from __future__ import annotations

from pathlib import Path

from controlplane.persist.files import atomic_write, read_checked
from controlplane.raft.codec import decode_hard_state, encode_hard_state
from controlplane.raft.messages import HardState

_MAGIC = b"RHS1"


class FileStableStore:
    """Term, vote and commit index in one atomically replaced file."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / "hardstate"
        self._last: HardState | None = None

    def save(self, hard_state: HardState) -> None:
        if hard_state != self._last:
            atomic_write(self.path, _MAGIC, encode_hard_state(hard_state))
            self._last = hard_state

    def load(self) -> HardState:
        if not self.path.exists():
            return HardState()
        self._last = decode_hard_state(read_checked(self.path, _MAGIC))
        return self._last

    def close(self) -> None:
        pass
