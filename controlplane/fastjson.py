"""JSON on the command path through orjson, with the standard library's meaning.

Every command is parsed on each replica as it is applied, and on the leader also as part of
its client frame and once more to validate it; the SDK writes it and its frame. The standard
library's `json` was 12-15 % of a replica's event-loop samples under W2 (py-spy, 64 writers);
orjson does the same work several times faster. But the two disagree at the edges, and a
replica parsing a committed entry differently from another (a rolling upgrade) would diverge:
orjson refuses NaN and Infinity literals, lone surrogates and numbers past a double's range,
and reads integers past 64 bits as floats; it writes NaN and infinities as null and refuses
integers past 64 bits and dict keys that are not strings. So `loads` and `dumps` answer
exactly what `json` answers: orjson where it is known to agree, `json` everywhere else
(tests/unit/test_fastjson.py compares the two over generated documents and the edge cases),
but for Enum members and UUIDs, which orjson writes (as their value, as text) where `json`
refuses them; no command, frame or answer holds one. `dumps_portable` is for the leader
stream's frames, which must be JSON any reader reads, and writes a NaN as null.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# A run of 19+ digits may be an integer past 64 bits, which orjson reads as a float. Found by
# mapping every ASCII digit to "0" and every other byte to " " (bytes.translate, in C; a regex
# search was slower than orjson's whole parse).
_DIGITS_ONLY = bytes(0x30 if 0x30 <= c <= 0x39 else 0x20 for c in range(256))
_LONG_RUN = b"0" * 19
# Types orjson would write but `json` refuses (dataclasses, datetimes) and subclasses of
# str/int/float/dict/list, which `json` writes by its own rules: all left to `json`.
_WRITE_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS


def loads(data: bytes | str) -> Any:
    """json.loads(data)."""
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    if _LONG_RUN not in raw.translate(_DIGITS_ONLY):
        try:
            return orjson.loads(raw)  # the UTF-8 already made, not made again inside orjson
        except orjson.JSONDecodeError:
            pass  # NaN, Infinity, a lone surrogate, 1e400 ...: json's answer, or json's error
    return json.loads(data)


def dumps(value: Any, *, sort_keys: bool = False, allow_nan: bool = True) -> bytes:
    """json.dumps(value, separators=(",", ":"), sort_keys=sort_keys, allow_nan=allow_nan),
    as UTF-8: equal once parsed, not byte for byte (orjson writes non-ASCII characters as
    they are, and 1e16 where json writes 1e+16)."""
    options = _WRITE_OPTIONS | orjson.OPT_SORT_KEYS if sort_keys else _WRITE_OPTIONS
    try:
        written = orjson.dumps(value, option=options)
    except TypeError:  # orjson.JSONEncodeError: big integers, non-string keys, subclasses ...
        pass
    else:
        if b"null" not in written:  # else a NaN or an infinity may have been written as null
            return written
    return json.dumps(value, separators=(",", ":"), sort_keys=sort_keys, allow_nan=allow_nan).encode()


def dumps_portable(value: Any) -> bytes:
    """JSON as RFC 8259 has it, for a wire any JSON reader may read: json.dumps(value,
    separators=(",", ":"))'s meaning but for non-finite floats, which JSON has no word for:
    written as null (as JavaScript's JSON.stringify does), where `json` writes NaN, which only
    Python reads. What orjson refuses goes to `json`, which refuses a non-finite float there
    (ValueError) rather than write NaN."""
    try:
        return orjson.dumps(value, option=_WRITE_OPTIONS)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
