"""The client calls' wire format on a standalone node's peer port, shared by the server
(standalone/routes.py) and the SDK (node_client.py): paths, and query errors as JSON."""

from __future__ import annotations

from typing import Any

from controlplane.state.model import CommandError, ConflictError, NotFoundError

PREFIX = "/client/v1"
ERROR_TYPES: dict[str, type[CommandError]] = {
    "CommandError": CommandError,
    "ConflictError": ConflictError,
    "NotFoundError": NotFoundError,
}


def encode_error(exc: CommandError) -> dict[str, str]:
    kind = type(exc).__name__ if type(exc).__name__ in ERROR_TYPES else "CommandError"
    return {"type": kind, "field": exc.field, "reason": exc.reason}


def decode_error(raw: dict[str, Any]) -> CommandError:
    return ERROR_TYPES.get(str(raw.get("type")), CommandError)(str(raw.get("field")), str(raw.get("reason")))
