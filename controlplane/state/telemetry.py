"""UAV telemetry: the report schema, row-by-row validation with reasons, the log entry that
carries many reports (compressed Arrow IPC), and the vectorized last-writer-wins apply.

A report is one row: uav, time (the UAV's own clock, seconds), seq (the UAV's own counter),
and any of lat, lon, alt, battery, vx, vy, vz (a missing value keeps the previous one), plus
the station that received it. The newest report per UAV wins by (time, seq); older ones are
stale, exact repeats are duplicates; both are dropped and counted, never applied.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa  # pyarrow.compute is imported where used: ~85 ms of a process's start

from controlplane import bugs
from controlplane.state.columns import KINEMATICS, UAVColumns

REPORT_SCHEMA = pa.schema(
    [
        ("uav", pa.string()),
        ("time", pa.float64()),
        ("seq", pa.int64()),
        *((name, pa.float64()) for name in KINEMATICS),
        ("station", pa.string()),
    ]
)
REQUIRED = ("uav", "time", "seq")
MAGIC = b"TLM1"
FLAG_AUTO_REGISTER = 1
# lz4 measured ~3x faster than zstd to write on this data at a similar size (bench/telemetry.py).
COMPRESSION = "lz4"
# One thread per segment, written and read: Arrow's thread pool (a task per column) cost
# 2-5x the single-threaded time on segments of 1-2 thousand reports here (833 reports: write
# 495 -> 86 us, read 405 -> 109 us), and every core is busy with the replicas and stations.
_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression=COMPRESSION, use_threads=False)
_IPC_READ = pa.ipc.IpcReadOptions(use_threads=False)


@dataclass(frozen=True)
class Rejection:
    row: int
    uav: str | None
    field: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "uav": self.uav, "field": self.field, "reason": self.reason}


class ReportError(ValueError):
    """The batch as a whole cannot be read (not a table, a column of the wrong type)."""


# --- turning what users send into report tables --------------------------------------------


def _from_dicts(rows: list[Any]) -> tuple[pa.Table, list[Rejection]]:
    columns: dict[str, list[Any]] = {f.name: [] for f in REPORT_SCHEMA}
    rejected: list[Rejection] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            rejected.append(Rejection(i, None, "report", f"must be an object, got {type(row).__name__}"))
            continue
        unknown = set(row) - set(columns)
        if unknown:
            rejected.append(Rejection(i, _uav_or_none(row), sorted(unknown)[0], "is not a report field"))
            continue
        problem = _row_types(row)
        if problem is not None:
            rejected.append(Rejection(i, _uav_or_none(row), *problem))
            continue
        for name, column in columns.items():
            column.append(row.get(name))
    return _original_rows(pa.table(columns, schema=REPORT_SCHEMA), rejected, len(rows)), rejected


def _uav_or_none(row: dict[str, Any]) -> str | None:
    uav = row.get("uav")
    return uav if isinstance(uav, str) else None


def _row_types(row: dict[str, Any]) -> tuple[str, str] | None:
    for name in ("uav", "station"):
        if row.get(name) is not None and not isinstance(row[name], str):
            return name, f"must be a string, got {type(row[name]).__name__}"
    seq = row.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63):
        return "seq", f"must be an integer in [0, 2**63), got {seq!r}"
    for name in ("time", *KINEMATICS):
        value = row.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return name, f"must be a number, got {value!r}"
    return None


def _original_rows(table: pa.Table, rejected: list[Rejection], total: int) -> pa.Table:
    """Remember each kept row's position in the caller's input, so reasons name it."""
    skipped = {r.row for r in rejected}
    kept = [i for i in range(total) if i not in skipped]
    return table.append_column("_row", pa.array(kept, pa.int64()))


def _coerce(table: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    unknown = [n for n in table.column_names if REPORT_SCHEMA.get_field_index(n) < 0 and n != "_row"]
    if unknown:
        raise ReportError(f"unknown report columns {unknown}; allowed: {REPORT_SCHEMA.names}")
    missing = [n for n in REQUIRED if n not in table.column_names]
    if missing:
        raise ReportError(f"report columns {missing} are required")
    out = {}
    for field in REPORT_SCHEMA:
        if field.name not in table.column_names:
            out[field.name] = pa.nulls(table.num_rows, field.type)
            continue
        column = table.column(field.name)
        if pa.types.is_timestamp(column.type) and field.name == "time":
            column = pc.divide(column.cast(pa.int64()).cast(pa.float64()), _ticks_per_second(column.type))
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        try:
            out[field.name] = column.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ReportError(f"column {field.name!r} ({column.type}) cannot be read as {field.type}: {exc}") from None
    rows = table.column("_row") if "_row" in table.column_names else pa.array(np.arange(table.num_rows))
    out["_row"] = rows
    return pa.table(out)


def _ticks_per_second(t: pa.TimestampType) -> float:
    return {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[t.unit]


def to_table(reports: Any) -> pa.Table:
    """Arrow table, record batch or pandas DataFrame -> one Arrow table (lists of dicts go
    through _from_dicts, which checks each row's types)."""
    if isinstance(reports, pa.RecordBatch):
        return pa.Table.from_batches([reports])
    if isinstance(reports, pa.Table):
        return reports
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(reports, pd.DataFrame):
        return pa.Table.from_pandas(reports, preserve_index=False)
    raise ReportError(
        f"reports must be an Arrow table or record batch, a pandas DataFrame or a list of dicts, "
        f"got {type(reports).__name__}"
    )


def normalize(reports: Any, station: str | None = None) -> tuple[pa.Table, list[Rejection]]:
    """Validate reports row by row: returns the good rows as a REPORT_SCHEMA table and a
    reason for every bad one (its row number in the input, the field, what is wrong)."""
    import pyarrow.compute as pc

    if isinstance(reports, list):
        table, rejected = _from_dicts(reports)
    else:
        table, rejected = to_table(reports), []
    table = _coerce(table)
    if station is not None:
        stations = table.column("station")
        filled = pc.fill_null(stations, station) if stations.null_count else stations
        table = table.set_column(table.schema.get_field_index("station"), "station", filled)
    bad, reasons = invalid_rows(table)
    if bad.any():
        uavs = table.column("uav").to_pylist()
        positions = table.column("_row").to_numpy()
        for i in np.nonzero(bad)[0].tolist():
            rejected.append(Rejection(int(positions[i]), uavs[i], *reasons[i]))
        table = table.filter(pa.array(~bad))
    rejected.sort(key=lambda r: r.row)
    return table.drop_columns(["_row"]), rejected


def invalid_rows(table: pa.Table, *, check_ids: bool = True) -> tuple[np.ndarray, dict[int, tuple[str, str]]]:
    """A mask of rows that break a rule, and (field, reason) for each (the first rule broken).
    check_ids=False skips the uav column (the state machine checks each distinct id once)."""
    import pyarrow.compute as pc

    n = table.num_rows
    broken: list[tuple[np.ndarray, str, str]] = []  # (rows breaking it, field, reason), in rule order
    if check_ids:
        uav = table.column("uav")
        broken.append((np.asarray(uav.is_null()), "uav", "is required"))
        if _byte_lengths_within(uav, 1, 128):  # so is every id's length in characters
            wrong = spaced_ids(uav)
        else:
            length = pc.fill_null(pc.utf8_length(uav), 1).to_numpy()
            wrong = (length == 0) | (length > 128) | spaced_ids(uav)
        broken.append((wrong, "uav", "must be a non-empty id without spaces (<= 128 chars)"))
    broken.append((~np.isfinite(_floats(table, "time")), "time", "must be a finite number (seconds)"))
    broken.append((int_values(table.column("seq"), -1) < 0, "seq", "must be a non-negative integer"))
    for name, (lo, hi) in KINEMATICS.items():
        column = table.column(name)
        if column.null_count == n:
            continue  # no report carries it (vx, vy, vz often): nothing to break
        values = _floats(table, name, absent=0.5 * (lo + hi))
        # NaN and infinities fail both comparisons (the bounds are finite).
        broken.append((~((values >= lo) & (values <= hi)), name, f"must be within [{lo}, {hi}]"))
    bad = np.zeros(n, dtype=bool)
    reasons: dict[int, tuple[str, str]] = {}
    if not any(mask.any() for mask, _, _ in broken):
        return bad, reasons  # the usual batch: no reason to name
    for mask, field, reason in broken:
        for i in np.nonzero(mask & ~bad)[0]:
            reasons[int(i)] = (field, reason)
        bad |= mask
    return bad, reasons


# The bytes RE2's \s matches (ASCII whitespace but \v): none occurs inside another
# character's UTF-8 sequence, whose bytes are all >= 0x80.
_SPACE_BYTES = (b" ", b"\t", b"\n", b"\f", b"\r")


def spaced_ids(ids: pa.ChunkedArray) -> np.ndarray:
    r"""Which ids hold whitespace (the regex \s). When no chunk's string data holds a space
    byte, none does: one look at the bytes, ~15x cheaper than the regex, which was half of a
    station's validation; otherwise the regex says which ids."""
    import pyarrow.compute as pc

    if not any(_holds_space_byte(chunk) for chunk in ids.chunks):
        return np.zeros(len(ids), dtype=bool)
    return np.asarray(pc.fill_null(pc.match_substring_regex(ids, r"\s"), False).to_numpy(), dtype=bool)


def _holds_space_byte(chunk: pa.Array) -> bool:
    data = chunk.buffers()[2]  # validity, offsets, data; a sliced chunk may hold more: then the regex decides
    if data is None:
        return False
    held = data.to_pybytes()  # `in` looks for one byte at memchr's speed: ~25x a table lookup per byte
    return any(space in held for space in _SPACE_BYTES)


def _byte_lengths_within(ids: pa.ChunkedArray, lo: int, hi: int) -> bool:
    """Whether every string's length in bytes is within [lo, hi] (offsets read, no string
    looked at); False also when that cannot be read so (another type)."""
    for chunk in ids.chunks:
        if chunk.type != pa.string():
            return False
        if not len(chunk):
            continue
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32, count=len(chunk) + 1, offset=4 * chunk.offset)
        lengths = np.diff(offsets)
        if not (lengths.min() >= lo and lengths.max() <= hi):
            return False
    return True


def _floats(table: pa.Table, name: str, absent: float = math.nan) -> np.ndarray:
    """A float column as numpy; nulls (absent values) become `absent`."""
    import pyarrow.compute as pc

    column = table.column(name)
    if column.null_count == len(column):  # a field no report carries (vx, vy, vz often)
        return np.full(len(column), absent)
    if column.null_count:
        column = pc.fill_null(column, absent)
    return np.asarray(column.to_numpy(), dtype=np.float64)


def int_values(column: pa.ChunkedArray | pa.Array, absent: int) -> np.ndarray:
    """An integer column as int64 numpy; nulls become `absent`."""
    import pyarrow.compute as pc

    if column.null_count:
        column = pc.fill_null(column, absent)
    return np.asarray(column.to_numpy(), dtype=np.int64)


# --- the log entry -------------------------------------------------------------------------


def encode_segment(table: pa.Table) -> bytes:
    """Reports as one Arrow IPC stream (lz4), the uav and station columns dictionary-encoded
    (one string per UAV, not per report). Stations encode their own segments, so the leader
    only joins bytes. The UAV dictionary is sorted: a station reporting the same UAVs again
    sends the same dictionary, whose rows every replica then already knows (IdRows)."""
    import pyarrow.compute as pc

    table = table.select(REPORT_SCHEMA.names).combine_chunks()
    i = table.schema.get_field_index("uav")
    table = table.set_column(i, "uav", _sorted_dictionary(pc.dictionary_encode(table.column("uav"))))
    i = table.schema.get_field_index("station")
    table = table.set_column(i, "station", _one_value_dictionary(table.column("station")))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_IPC_OPTIONS) as writer:
        writer.write_table(table)
    body: bytes = sink.getvalue().to_pybytes()
    return body


def _sorted_dictionary(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The same values, dictionary-encoded with the dictionary in sorted order."""
    import pyarrow.compute as pc

    chunk = column.combine_chunks()
    order = pc.sort_indices(chunk.dictionary)
    position = np.empty(len(order), dtype=np.int32)
    position[order.to_numpy()] = np.arange(len(order), dtype=np.int32)
    indices = pc.take(pa.array(position), chunk.indices)  # a null index stays null
    return pa.chunked_array([pa.DictionaryArray.from_arrays(indices, chunk.dictionary.take(order))])


def _one_value_dictionary(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """dictionary_encode(column), without hashing every row when all hold one value (a
    station's segment: its own name in every report; comparing is ~3x cheaper)."""
    import pyarrow.compute as pc

    if len(column) and not column.null_count and pc.all(pc.equal(column, column[0])).as_py():
        indices = pa.array(np.zeros(len(column), dtype=np.int32))
        return pa.chunked_array([pa.DictionaryArray.from_arrays(indices, pa.array([column[0].as_py()], pa.string()))])
    return pc.dictionary_encode(column)


def join_segments(segments: list[bytes], *, auto_register: bool) -> bytes:
    """One log entry: b"TLM1", a flags byte, u32 segment count, then each segment with its
    u32 length."""
    flags = FLAG_AUTO_REGISTER if auto_register else 0
    parts = [MAGIC, struct.pack("<BI", flags, len(segments))]
    for segment in segments:
        parts += [struct.pack("<I", len(segment)), segment]
    return b"".join(parts)


def encode_entry(table: pa.Table, *, auto_register: bool) -> bytes:
    return join_segments([encode_segment(table)], auto_register=auto_register)


def is_telemetry(data: bytes) -> bool:
    return data[:4] == MAGIC


def decode_entry(data: bytes, decoded: list[pa.Table] | None = None) -> tuple[list[pa.Table], bool]:
    """The entry's segments as report tables (in order), and its auto-register flag.
    `decoded`: its segments, already decoded by the caller (check_segment), taken as they are."""
    if not is_telemetry(data) or len(data) < 9:
        raise ValueError("not a telemetry entry")
    flags, count = struct.unpack_from("<BI", data, 4)
    if decoded is not None and len(decoded) != count:
        decoded = None
    view, pos, tables = memoryview(data), 9, []
    for i in range(count):
        if pos + 4 > len(data):
            raise ValueError("telemetry entry truncated")
        (size,) = struct.unpack_from("<I", data, pos)
        if pos + 4 + size > len(data):
            raise ValueError("telemetry entry truncated")
        tables.append(_decode_segment(view[pos + 4 : pos + 4 + size]) if decoded is None else decoded[i])
        pos += 4 + size
    return tables, bool(flags & FLAG_AUTO_REGISTER)


def check_segment(segment: bytes) -> pa.Table:
    """The segment's reports as decode_entry gives them; ValueError naming what is wrong with
    a station's encoded segment (the leader checks every segment before it goes into the log)."""
    if not isinstance(segment, bytes):
        raise TypeError(f"a telemetry segment must be bytes, got {type(segment).__name__}")
    return _decode_segment(memoryview(segment))


def _decode_segment(data: memoryview) -> pa.Table:
    """One segment as a report table with exactly REPORT_SCHEMA's columns and types (ids
    dictionary-encoded); ValueError when it is anything else."""
    import pyarrow.compute as pc

    try:
        table = pa.ipc.open_stream(pa.py_buffer(data), options=_IPC_READ).read_all().combine_chunks()
    except pa.ArrowException as exc:
        raise ValueError(f"telemetry segment is not an Arrow stream: {exc}") from None
    if table.schema.names != REPORT_SCHEMA.names:
        raise ValueError(f"telemetry segment has columns {table.schema.names}, expected {REPORT_SCHEMA.names}")
    if bugs.enabled("telemetry_poison"):
        return table
    for i, want in enumerate(REPORT_SCHEMA):
        got = table.schema.field(i).type
        if want.name in ("uav", "station"):
            if pa.types.is_dictionary(got) and got.value_type == pa.string():
                continue
            if got != pa.string():
                raise ValueError(f"telemetry column {want.name!r} is {got}, expected (dictionary-encoded) string")
            table = table.set_column(i, want.name, pc.dictionary_encode(table.column(i)))
        elif got != want.type:
            raise ValueError(f"telemetry column {want.name!r} is {got}, expected {want.type}")
    return table.combine_chunks()


# --- applying: vectorized last-writer-wins -------------------------------------------------


@dataclass
class TelemetryCounts:
    accepted: int = 0  # newer than what the replica had (the last of them per UAV is written)
    written: int = 0  # UAV rows changed
    stale: int = 0  # older than the UAV's current report
    duplicate: int = 0  # the same (time, seq) as a report already applied or in the batch
    rejected: int = 0  # broke a rule (re-checked on apply) or named an unknown UAV
    registered: int = 0  # UAVs created by reports (auto-register)

    def add(self, other: TelemetryCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def apply_last_writer_wins(
    columns: UAVColumns, rows: np.ndarray, table: pa.Table
) -> tuple[TelemetryCounts, np.ndarray]:
    """Apply reports whose UAV rows are known (rows[i] >= 0; -1 = skip, counted elsewhere).
    Returns the counts and a mask of the accepted reports (newer than what was there)."""
    counts = TelemetryCounts()
    accepted = np.zeros(len(rows), dtype=bool)
    known = rows >= 0
    if known.all():  # the usual segment: no row to leave out
        keep, r, t, s = np.arange(len(rows)), rows, _floats(table, "time"), table.column("seq").to_numpy()
    else:
        keep = np.nonzero(known)[0]
        if len(keep) == 0:
            return counts, accepted
        r, t, s = rows[keep], _floats(table, "time")[keep], table.column("seq").to_numpy()[keep]
    # Sort by UAV, then (time, seq). The sort is stable and runs over the input reversed, so
    # among equal keys the first occurrence ends each run of repeats and is the one counted.
    keep, r, t, s = keep[::-1], r[::-1], t[::-1], s[::-1]
    order = np.lexsort((s, t, r))
    r, t, s, keep = r[order], t[order], s[order], keep[order]
    repeat_of_next = np.zeros(len(r), dtype=bool)
    repeat_of_next[:-1] = (r[:-1] == r[1:]) & (t[:-1] == t[1:]) & (s[:-1] == s[1:])
    stored_t, stored_s = columns.report_time[r], columns.report_seq[r]
    newer = (t > stored_t) | ((t == stored_t) & (s > stored_s))
    same_as_stored = (t == stored_t) & (s == stored_s)
    last_of_uav = np.ones(len(r), dtype=bool)
    last_of_uav[:-1] = r[:-1] != r[1:]
    winner = last_of_uav & newer
    accepted[keep[newer & ~repeat_of_next]] = True
    counts.accepted = int(np.count_nonzero(accepted))
    counts.duplicate = int(np.count_nonzero(same_as_stored | (repeat_of_next & newer)))
    counts.stale = int(np.count_nonzero(~newer & ~same_as_stored))
    counts.written = int(np.count_nonzero(winner))
    win_rows, win_src = r[winner], keep[winner]
    for name, column in columns.floats.items():
        nulls = table.column(name).null_count
        if nulls == len(table):
            continue  # no report carries it: every row keeps its value
        values = _floats(table, name)[win_src]
        if nulls == 0:
            column[win_rows] = values
            continue
        present = ~np.isnan(values)
        column[win_rows[present]] = values[present]
    columns.report_time[win_rows] = t[winner]
    columns.report_seq[win_rows] = s[winner]
    return counts, accepted


def report_time_histogram(table: pa.Table, applied: np.ndarray, buckets: int = 256) -> list[list[float]]:
    """[bucket start time, reports] over the reports' own times, in at most `buckets` buckets
    of at least 10 ms: what a watcher needs to tell how old reports were when they became
    visible (bench/telemetry.py measures report-to-visible latency with it)."""
    times = _floats(table, "time")[applied]
    if len(times) == 0:
        return []
    lo, hi = float(times.min()), float(times.max())
    width = max(0.01, (hi - lo) / buckets)
    # Truncation is the floor here (never negative), ~5x cheaper than numpy's float floor division.
    counts = np.bincount(((times - lo) / width).astype(np.int64))
    present = np.nonzero(counts)[0]
    return [[lo + float(i) * width, int(counts[i])] for i in present.tolist()]
