"""Requests checked against the same schemas the OpenAPI document publishes (api/openapi.py),
so that what the document allows the server takes and what it forbids the server refuses.
A violation is a CommandError naming the parameter or the body field (422)."""

from __future__ import annotations

import functools
import math
import numbers
import re
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from controlplane.api.openapi import SCHEMAS, Param, Route
from controlplane.state.model import CommandError

MAX_REASON = 200


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    """`pattern` with ECMA-262's `$` (the end of the string, not before a final newline, as
    Python's is)."""
    import jsonschema

    if isinstance(instance, str) and not _compiled(pattern).search(instance):
        yield jsonschema.ValidationError(f"{_shown(instance)} does not match {pattern!r}")


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern)


@functools.cache
def validator_class() -> Any:
    """Draft 4 with the ECMA `$`. Imported when a request first fails its compiled predicate
    (below): jsonschema and what it imports cost a process ~80 ms at start, a restart's time."""
    import jsonschema

    return jsonschema.validators.extend(jsonschema.Draft4Validator, {"pattern": _pattern})


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# jsonschema walks a schema keyword by keyword for every request (~50 us for a UAV update,
# as much again for its path parameters). Requests are nearly always valid, so each schema is
# also compiled once into a plain predicate over the keywords our schemas use, with Draft 4's
# meaning (integer: an int, not a bool nor 1.0; minimum and the like only for numbers, and so
# on); jsonschema stays the judge of anything the predicate does not pass, and names the
# error. tests/unit/api/test_checks.py holds the two to the same verdicts.
def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Number) and not isinstance(v, bool)


_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}
_IGNORED = frozenset({"description", "title", "example", "default"})
_compiled_schemas: dict[int, tuple[dict[str, Any], Callable[[Any], bool]]] = {}


def _passes(schema: dict[str, Any]) -> Callable[[Any], bool]:
    """The schema's predicate, compiled on first use (schemas are module constants)."""
    known = _compiled_schemas.get(id(schema))
    if known is None or known[0] is not schema:
        known = _compiled_schemas[id(schema)] = (schema, _compile(schema))
    return known[1]


def _compile(schema: dict[str, Any]) -> Callable[[Any], bool]:
    tests: list[Callable[[Any], bool]] = []
    for keyword, arg in schema.items():
        if keyword == "type":
            if not isinstance(arg, str) or arg not in _TYPES:
                raise ValueError(f"type {arg!r}: only one of {sorted(_TYPES)} is compiled")
            tests.append(_TYPES[arg])
        elif keyword == "enum":
            if not all(isinstance(choice, str) for choice in arg):
                raise ValueError(f"enum {arg!r}: only strings are compiled (jsonschema's equality differs)")
            tests.append(functools.partial(_one_of, tuple(arg)))
        elif keyword in _BOUNDS:
            tests.append(functools.partial(_BOUNDS[keyword], arg))
        elif keyword == "pattern":
            tests.append(functools.partial(_matches, _compiled(arg)))
        elif keyword == "required":
            tests.append(functools.partial(_has_all, tuple(arg)))
        elif keyword == "properties":
            fields = {name: _compile(sub) for name, sub in arg.items()}
            tests.append(functools.partial(_fields_pass, fields, schema.get("additionalProperties") is False))
        elif keyword == "additionalProperties":
            if arg is not False or "properties" not in schema:
                raise ValueError(f"additionalProperties {arg!r}: only false beside properties is compiled")
        elif keyword == "items":
            if not isinstance(arg, dict):
                raise ValueError("items: only one schema for every item is compiled")
            tests.append(functools.partial(_items_pass, _compile(arg)))
        elif keyword not in _IGNORED:
            raise ValueError(f"schema keyword {keyword!r} is not compiled: add it to api/checks.py")

    def passes(value: Any) -> bool:
        for test in tests:  # noqa: SIM110 (a loop: all() over a generator costs a frame per call)
            if not test(value):
                return False
        return True

    return passes


def _one_of(choices: tuple[str, ...], v: Any) -> bool:
    return isinstance(v, str) and v in choices


def _at_least(m: float, v: Any) -> bool:
    return not _is_number(v) or not v < m


def _at_most(m: float, v: Any) -> bool:
    return not _is_number(v) or not v > m


def _min_length(n: int, v: Any) -> bool:
    return not isinstance(v, str) or len(v) >= n


def _max_length(n: int, v: Any) -> bool:
    return not isinstance(v, str) or len(v) <= n


def _min_items(n: int, v: Any) -> bool:
    return not isinstance(v, list) or len(v) >= n


def _max_items(n: int, v: Any) -> bool:
    return not isinstance(v, list) or len(v) <= n


_BOUNDS: dict[str, Callable[[Any, Any], bool]] = {
    "minimum": _at_least,
    "maximum": _at_most,
    "minLength": _min_length,
    "maxLength": _max_length,
    "minItems": _min_items,
    "maxItems": _max_items,
}


def _matches(pattern: re.Pattern[str], v: Any) -> bool:
    return not isinstance(v, str) or pattern.search(v) is not None


def _has_all(names: tuple[str, ...], v: Any) -> bool:
    return not isinstance(v, dict) or all(name in v for name in names)


def _items_pass(item: Callable[[Any], bool], v: Any) -> bool:
    return not isinstance(v, list) or all(item(x) for x in v)


def _fields_pass(fields: dict[str, Callable[[Any], bool]], closed: bool, value: Any) -> bool:
    if not isinstance(value, dict):
        return True
    for name, field_value in value.items():
        check = fields.get(name)
        if check is None:
            if closed:
                return False
        elif not check(field_value):
            return False
    return True


def _violation(schema: dict[str, Any], value: Any) -> tuple[str, str] | None:
    """(where, why) of the first way `value` breaks `schema`, or None."""
    if _passes(schema)(value):
        return None
    import jsonschema

    error = jsonschema.exceptions.best_match(validator_class()(schema).iter_errors(value))
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
