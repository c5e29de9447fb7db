"""Requests checked against the same schemas the OpenAPI document publishes (api/openapi.py),
so that what the document allows the server takes and what it forbids the server refuses.
A violation is a CommandError naming the parameter or the body field (422)."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
from aiohttp import web

from controlplane.api.openapi import SCHEMAS, Param, Route
from controlplane.state.model import CommandError

MAX_REASON = 200


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    """`pattern` with ECMA-262's `$` (the end of the string, not before a final newline, as
    Python's is)."""
    if isinstance(instance, str) and not _compiled(pattern).search(instance):
        yield jsonschema.ValidationError(f"{_shown(instance)} does not match {pattern!r}")


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern)


Validator = jsonschema.validators.extend(jsonschema.Draft4Validator, {"pattern": _pattern})


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _violation(schema: dict[str, Any], value: Any) -> tuple[str, str] | None:
    """(where, why) of the first way `value` breaks `schema`, or None."""
    error = jsonschema.exceptions.best_match(Validator(schema).iter_errors(value))
    if error is None:
        return None
    where = ""
    for part in error.absolute_path:
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
    if error.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        return (f"{where}.{missing[0]}" if missing else where).lstrip("."), "is required"
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"{where}.{extra[0]}".lstrip(".") if extra else where.lstrip(
            "."
        ), f"is not a field here (allowed: {allowed})"
    message = error.message if len(error.message) <= MAX_REASON else error.message[: MAX_REASON - 3] + "..."
    return where.lstrip("."), message


def check_body(schema_name: str, body: Any) -> dict[str, Any]:
    """The body if it is what the schema allows; else CommandError naming the field."""
    found = _violation(SCHEMAS[schema_name], body)
    if found is not None:
        where, why = found
        raise CommandError(where or "body", why)
    return dict(body)


def _raw(param: Param, request: web.Request) -> str | None:
    if param.where == "path":
        return request.match_info.get(param.name)
    if param.where == "query":
        return request.query.get(param.name)
    return request.headers.get(param.name)


def _typed(param: Param, raw: str) -> Any:
    kind = param.schema.get("type")
    if kind == "integer":
        if not re.fullmatch(r"-?[0-9]{1,19}", raw):
            raise CommandError(param.name, f"must be an integer, got {_shown(raw)}")
        return int(raw)
    if kind == "number":
        if not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?", raw) or not math.isfinite(float(raw)):
            raise CommandError(param.name, f"must be a finite number, got {_shown(raw)}")
        return float(raw)
    return raw


def check_params(route: Route, request: web.Request) -> None:
    """Every declared path, query and header parameter as its schema says (type, enum,
    pattern, bounds); a required one present."""
    for param in route.params:
        raw = _raw(param, request)
        if raw is None:
            if param.required or param.where == "path":
                raise CommandError(param.name, "is required")
            continue
        found = _violation(param.schema, _typed(param, raw))
        if found is not None:
            raise CommandError(param.name, found[1])
