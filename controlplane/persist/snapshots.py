from __future__ import annotations

import re
import struct
from pathlib import Path

from controlplane.persist.errors import CorruptionError
from controlplane.persist.files import atomic_write, read_checked
from controlplane.raft.codec import CodecError, decode_snapshot_meta, encode_snapshot_meta
from controlplane.raft.messages import Snapshot

_MAGIC = b"RSN1"
_NAME = re.compile(r"^snapshot-(\d{20})-(\d{20})\.snap$")
_LEN = struct.Struct("<I")


class FileSnapshotStore:
    """Snapshots as atomically written files; the newest is loaded, `retain` are kept."""

    def __init__(self, directory: Path, retain: int = 2) -> None:
        self.dir = Path(directory)
        self.retain = retain

    def _files(self) -> list[Path]:
        return sorted(p for p in self.dir.iterdir() if _NAME.match(p.name))

    def save(self, snapshot: Snapshot) -> None:
        meta = encode_snapshot_meta(snapshot.meta)
        name = f"snapshot-{snapshot.meta.index:020d}-{snapshot.meta.term:020d}.snap"
        atomic_write(self.dir / name, _MAGIC, _LEN.pack(len(meta)) + meta + snapshot.data)
        for old in self._files()[: -self.retain]:
            old.unlink()

    def load(self) -> Snapshot | None:
        files = self._files()
        if not files:
            return None
        path = files[-1]
        payload = read_checked(path, _MAGIC)
        (n,) = _LEN.unpack_from(payload)
        try:
            meta = decode_snapshot_meta(payload[_LEN.size : _LEN.size + n])
        except CodecError as exc:
            raise CorruptionError(path, 12, f"snapshot metadata: {exc}") from None
        return Snapshot(meta, payload[_LEN.size + n :])

    def close(self) -> None:
        pass
