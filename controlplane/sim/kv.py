"""The simulated clients' state machine: a tiny key-value register store."""

from __future__ import annotations

import json


def encode_put(key: str, value: int) -> bytes:
    return f"{key}={value}".encode()


def decode_put(data: bytes) -> tuple[str, int]:
    key, _, value = data.decode().partition("=")
    return key, int(value)


class KVStore:
    def __init__(self) -> None:
        self.data: dict[str, int] = {}

    def apply(self, command: bytes) -> None:
        key, value = decode_put(command)
        self.data[key] = value

    def get(self, key: str) -> int | None:
        return self.data.get(key)

    def snapshot(self) -> bytes:
        return json.dumps(self.data, sort_keys=True).encode()

    @classmethod
    def restore(cls, data: bytes) -> KVStore:
        kv = cls()
        if data:
            kv.data = {str(k): int(v) for k, v in json.loads(data).items()}
        return kv
