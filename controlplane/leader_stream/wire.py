"""The leader stream's frames: JSON text, each a list of requests or of answers, matched by
the id the client gave. Many callers' requests made in the same moment share a frame.

Requests:  [id, "propose", command_text, timeout]  |  [id, "query", name, args, consistency]
Answers:   [id, "ok", value]  |  [id, "retry", why]  |  [id, "error", query_error]  |  [id, "invalid", why]

A station's telemetry segment (state/telemetry.py, Arrow bytes) travels alone in a binary
frame: u64 id, f64 timeout (seconds), then the segment. Its answer comes in a text frame
like any other: "ok" with the apply counts of the entry it went in, "retry", or "invalid"
(a malformed segment, which never reaches the log).

Frames are JSON as RFC 8259 has it (fastjson.dumps_portable): a non-finite number, which
JSON has no word for, travels as null and is refused there (a NaN timeout makes the request
"invalid"; a NaN query argument is refused by the query, naming it).

"ok" is the state machine's answer (a command's, which may itself say refused) or the
query's; "retry": nothing is known to have been applied here (not the leader, timed out),
resend the same bytes elsewhere; "error": the query's own CommandError
(standalone/wire.encode_error); "invalid": the request itself is malformed.
"""

from __future__ import annotations

import math
import struct
from typing import Any, NamedTuple

from controlplane import fastjson

PATH = "/client/v1/stream"
CONSISTENCIES = ("linearizable", "stale")


class Proposal(NamedTuple):  # a tuple: built for every request of every frame
    id: int
    command: bytes
    timeout: float


class Query(NamedTuple):
    id: int
    name: str
    args: dict[str, Any] | None
    consistency: str


Request = Proposal | Query
Answer = list[Any]  # [id, kind, value]


SEGMENT_HEADER = struct.Struct("<Qd")  # id, timeout


class Segment(NamedTuple):
    id: int
    timeout: float
    data: bytes


def encode_segment(rid: int, timeout: float, segment: bytes) -> bytes:
    return SEGMENT_HEADER.pack(rid, timeout) + segment


def decode_segment(frame: bytes) -> tuple[Segment | None, Answer | None]:
    """The segment of a frame, or an "invalid" answer for it (a timeout not in (0, 60]
    seconds). ValueError when the frame is too short to name its id: nobody to answer."""
    if len(frame) < SEGMENT_HEADER.size:
        raise ValueError(f"a segment frame starts with a {SEGMENT_HEADER.size}-byte header, got {len(frame)} bytes")
    rid, timeout = SEGMENT_HEADER.unpack_from(frame)
    if not (math.isfinite(timeout) and 0 < timeout <= 60):
        return None, [rid, "invalid", f"a segment's timeout must be in (0, 60] seconds, got {timeout}"]
    return Segment(rid, timeout, frame[SEGMENT_HEADER.size :]), None


def encode(items: list[Any]) -> str:
    return fastjson.dumps_portable(items).decode()


def unencodable(item: Any) -> str | None:
    """Why JSON cannot carry `item` (a frame's one request or answer), None when it can."""
    try:
        fastjson.dumps_portable(item)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def decode_requests(text: str) -> tuple[list[Request], list[Answer]]:
    """The well-formed requests of a frame, and an "invalid" answer for each malformed one
    that has an id. ValueError when the frame itself is not a list of requests."""
    try:
        items = fastjson.loads(text)
    except ValueError:
        raise ValueError("the frame is not JSON") from None
    if not isinstance(items, list):
        raise ValueError("a frame is a JSON list of requests")
    requests: list[Request] = []
    invalid: list[Answer] = []
    for item in items:
        if type(item) is not list or not item or type(item[0]) is not int:
            raise ValueError(f"a request is a list starting with an integer id, got {str(item)[:80]}")
        try:
            requests.append(_request(item))
        except ValueError as exc:
            invalid.append([item[0], "invalid", str(exc)])
    return requests, invalid


def _request(item: list[Any]) -> Request:
    # Exact types: the frame is JSON, whose ints, floats and strings are exactly those (bools
    # are not ints here). Checked in line, not by `match`: a frame carries many requests.
    if len(item) == 4 and item[1] == "propose":
        rid, _, command, timeout = item
        if type(command) is str and (type(timeout) is float or type(timeout) is int):
            if not 0 < timeout <= 60:
                raise ValueError(f"a proposal's timeout must be in (0, 60] seconds, got {timeout}")
            return Proposal(rid, command.encode(), float(timeout))
    elif len(item) == 5 and item[1] == "query":
        rid, _, name, args, consistency = item
        if type(name) is str and (args is None or type(args) is dict) and type(consistency) is str:
            if consistency not in CONSISTENCIES:
                raise ValueError(f"consistency must be one of {CONSISTENCIES}, got {consistency!r}")
            return Query(rid, name, args, consistency)
    raise ValueError(
        "expected [id, 'propose', command_text, timeout] or [id, 'query', name, args_or_null, consistency], "
        f"got {str(item)[:120]}"
    )
