"""Atomic, checksummed small files: write to a temp file, fsync, rename, fsync the directory."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from controlplane.persist.errors import CorruptionError

_HEADER = struct.Struct("<4sII")  # magic, crc32 of payload, payload length


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, magic: bytes, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_HEADER.pack(magic, zlib.crc32(payload), len(payload)))
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_checked(path: Path, magic: bytes) -> bytes:
    data = path.read_bytes()
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
