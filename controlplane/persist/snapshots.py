from __future__ import annotations

import re
import struct
from pathlib import Path

from controlplane.persist.errors import CorruptionError
from controlplane.persist.files import atomic_write, read_checked
from controlplane.persist.fs import OS_FILESYSTEM, FileSystem
from controlplane.raft.codec import CodecError, decode_snapshot_meta, encode_snapshot_meta
from controlplane.raft.messages import Snapshot

_MAGIC = b"RSN1"
_NAME = re.compile(r"^snapshot-(\d{20})-(\d{20})\.snap$")
_LEN = struct.Struct("<I")


class FileSnapshotStore:
    """Snapshots as atomically written files; the newest is loaded, `retain` are kept."""

    def __init__(self, directory: Path, retain: int = 2, *, fs: FileSystem = OS_FILESYSTEM) -> None:
        if retain < 1:
            raise ValueError(f"retain must be at least 1, got {retain}")
        self.dir = Path(directory)
        self.retain = retain
        self.fs = fs

    def _files(self) -> list[Path]:
        return [self.dir / n for n in self.fs.listdir(self.dir) if _NAME.match(n)]

    def save(self, snapshot: Snapshot) -> None:
        meta = encode_snapshot_meta(snapshot.meta)
        name = f"snapshot-{snapshot.meta.index:020d}-{snapshot.meta.term:020d}.snap"
        atomic_write(self.fs, self.dir / name, _MAGIC, _LEN.pack(len(meta)) + meta + snapshot.data)
        for old in self._files()[: -self.retain]:
            self.fs.remove(old)

    def load(self) -> Snapshot | None:
        files = self._files()
        if not files:
            return None
        path = files[-1]
        payload = read_checked(self.fs, path, _MAGIC)
        (n,) = _LEN.unpack_from(payload)
        try:
            meta = decode_snapshot_meta(payload[_LEN.size : _LEN.size + n])
        except CodecError as exc:
            raise CorruptionError(path, 12, f"snapshot metadata: {exc}") from None
        return Snapshot(meta, payload[_LEN.size + n :])

    def close(self) -> None:
        pass
