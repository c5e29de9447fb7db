"""Missions from a file (JSON, YAML or CSV), validated row by row: every good row becomes a
`create_mission` command, every bad one a (line, reason) — nothing is dropped silently.

A mission is {"mission" (or "id"), "waypoints": [{"lat", "lon", "alt"}, ...] (or [[lat, lon,
alt], ...]), "priority"?, "min_battery"?}. In CSV the columns are mission, waypoints,
priority, min_battery, and waypoints are "lat lon alt; lat lon alt; ..." (line 1 is the header).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from controlplane.state.fleet import validate
from controlplane.state.model import CommandError

FIELDS = ("mission", "waypoints", "priority", "min_battery")


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "reason": self.reason}


@dataclass
class MissionFile:
    commands: list[tuple[int, dict[str, Any]]]  # (line, command)
    bad: list[BadRow]


def _command(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise CommandError("mission", f"each mission must be an object, got {type(raw).__name__}")
    raw = dict(raw)
    if "id" in raw and "mission" not in raw:
        raw["mission"] = raw.pop("id")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise CommandError(unknown[0], f"is not a mission field (allowed: {', '.join(FIELDS)})")
    waypoints = raw.get("waypoints")
    if isinstance(waypoints, list):
        raw["waypoints"] = [
            {"lat": w[0], "lon": w[1], "alt": w[2]} if isinstance(w, list | tuple) and len(w) == 3 else w
            for w in waypoints
        ]
    return validate({"type": "create_mission", **raw})


def _rows(items: list[tuple[int, Any]]) -> MissionFile:
    out = MissionFile([], [])
    seen: dict[str, int] = {}
    for line, raw in items:
        try:
            if isinstance(raw, CommandError):
                raise raw
            cmd = _command(raw)
        except CommandError as exc:
            out.bad.append(BadRow(line, str(exc)))
            continue
        if cmd["mission"] in seen:
            out.bad.append(BadRow(line, f"mission {cmd['mission']!r} repeats line {seen[cmd['mission']]}"))
            continue
        seen[cmd["mission"]] = line
        out.commands.append((line, cmd))
    return out


def _json_items(text: str) -> list[tuple[int, Any]]:
    """Each array element with the line it starts on."""
    decoder = json.JSONDecoder()
    start = text.lstrip()
    offset = len(text) - len(start)
    if start.startswith("{"):
        doc = json.loads(text)
        if not isinstance(doc, dict) or not isinstance(doc.get("missions"), list):
            raise ValueError('a JSON object must hold a "missions" list')
        offset = text.index("[", text.index('"missions"'))
    elif not start.startswith("["):
        raise ValueError("JSON must be a list of missions or an object with a 'missions' list")
    pos = offset + 1
    items: list[tuple[int, Any]] = []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return items
        value, end = decoder.raw_decode(text, pos)
        items.append((text.count("\n", 0, pos) + 1, value))
        pos = end


def _yaml_items(text: str) -> list[tuple[int, Any]]:
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "missions":
                node = value
                break
    if not isinstance(node, yaml.SequenceNode):
        raise ValueError("YAML must be a list of missions or a mapping with a 'missions' list")
    loader = yaml.SafeLoader("")
    return [(item.start_mark.line + 1, loader.construct_object(item, deep=True)) for item in node.value]


def _csv_items(text: str) -> list[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("mission", "waypoints") if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"CSV needs the columns {missing} (header: {reader.fieldnames})")
    items: list[tuple[int, Any]] = []
    for row in reader:
        line = reader.line_num
        raw: dict[str, Any] = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
        try:
            raw["waypoints"] = [
                [float(x) for x in point.split()] for point in row["waypoints"].split(";") if point.strip()
            ]
            for key, kind in (("priority", int), ("min_battery", float)):
                if key in raw:
                    raw[key] = kind(raw[key])
        except (ValueError, AttributeError) as exc:
            items.append((line, CommandError("waypoints", f"unreadable ({exc}); write 'lat lon alt; lat lon alt'")))
            continue
        items.append((line, raw))
    return items


def load_missions(path: str | Path) -> MissionFile:
    """Raises ValueError (naming the file) when the file as a whole cannot be read."""
    path = Path(path)
    readers = {".json": _json_items, ".yaml": _yaml_items, ".yml": _yaml_items, ".csv": _csv_items}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: unknown format {path.suffix!r} (use .json, .yaml, .yml or .csv)")
    try:
        text = path.read_text()
        items = reader(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError, csv.Error) as exc:
        raise ValueError(f"{path}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return _rows(items)


async def submit_missions(
    parsed: MissionFile,
    clients: list[Any],
    on_progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Send the good rows as create_mission commands, one client per worker (a client's
    commands must arrive in seq order); returns the rows refused on apply with reasons."""
    queue = list(parsed.commands)
    total, done = len(queue), 0
    refused: list[dict[str, Any]] = []

    async def worker(client: Any) -> None:
        nonlocal done
        while queue:
            line, cmd = queue.pop(0)
            answer: dict[str, Any] = await client.command(cmd)
            if not answer["ok"]:
                refused.append({"line": line, "reason": f"{answer['field']}: {answer['error']}"})
            done += 1
            if on_progress is not None and (done % max(1, total // 20) == 0 or done == total):
                on_progress(done, total)

    await asyncio.gather(*(worker(c) for c in clients))
    refused.sort(key=lambda r: r["line"])
    return refused
