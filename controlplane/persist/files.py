"""Atomic, checksummed small files: write to a temp file, fsync, rename, fsync the directory."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from controlplane.persist.errors import CorruptionError
from controlplane.persist.fs import FileSystem

_HEADER = struct.Struct("<4sII")  # magic, crc32 of payload, payload length


def atomic_write(fs: FileSystem, path: Path, magic: bytes, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    f = fs.create(tmp)
    try:
        f.write(_HEADER.pack(magic, zlib.crc32(payload), len(payload)) + payload)
        f.fsync()
    finally:
        f.close()
    fs.rename(tmp, path)
    fs.fsync_dir(path.parent)


def read_checked(fs: FileSystem, path: Path, magic: bytes) -> bytes:
    data = fs.read(path)
    if len(data) < _HEADER.size:
        raise CorruptionError(path, 0, f"file is {len(data)} bytes, shorter than its header")
    got_magic, crc, length = _HEADER.unpack_from(data)
    if got_magic != magic:
        raise CorruptionError(path, 0, f"bad magic {got_magic!r}, expected {magic!r}")
    payload = data[_HEADER.size :]
    if len(payload) != length:
        raise CorruptionError(path, _HEADER.size, f"payload is {len(payload)} bytes, header says {length}")
    if zlib.crc32(payload) != crc:
        raise CorruptionError(path, _HEADER.size, "checksum mismatch")
    return payload
