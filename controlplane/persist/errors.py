from __future__ import annotations

from pathlib import Path


class StorageError(Exception):
    """The replica's data directory cannot be used as it is."""


class CorruptionError(StorageError):
    """Stored bytes failed their checksum somewhere other than a torn tail."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt record at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
