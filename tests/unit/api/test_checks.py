"""The API's compiled schema predicates against jsonschema (Draft 4 with the ECMA `$`): the
predicate may only pass what jsonschema passes, for every schema the API checks bodies and
parameters against, on values near each schema (valid ones, bounds and one past them, wrong
types, bools for numbers, 1.0 for integers, NaN, a final newline, unknown and missing fields)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.api import checks
from controlplane.api.openapi import ROUTES, SCHEMAS

PARAM_SCHEMAS: dict[str, dict[str, Any]] = {}
for route in ROUTES:
    for param in route.params:  # each distinct schema once (routes share most of them)
        if all(known is not param.schema for known in PARAM_SCHEMAS.values()):
            PARAM_SCHEMAS[f"parameter {param.name} of {route.method} {route.path}"] = param.schema
ALL_SCHEMAS = {**{f"body {name}": schema for name, schema in SCHEMAS.items()}, **PARAM_SCHEMAS}

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
any_json = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


def near(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    kind = schema.get("type")
    options: list[st.SearchStrategy[Any]] = [any_json]
    if kind in ("number", "integer"):
        bounds = [schema[k] for k in ("minimum", "maximum") if k in schema]
        edges = [b + d for b in bounds for d in (-1, -0.5, 0, 0.5, 1)] + [0, 1, 1.0, -1, math.nan, math.inf, True]
        options += [st.sampled_from(edges), st.integers(-(2**63), 2**64), st.floats(-1e3, 1e4)]
        if bounds:
            options.append(st.integers(int(min(bounds)) - 2, int(max(bounds)) + 2))
    if kind == "string":
        if "enum" in schema:
            options.append(st.sampled_from(schema["enum"]))
        if "pattern" in schema:
            matching = st.from_regex(checks._compiled(schema["pattern"]))
            options += [matching, matching.map(lambda s: s + "\n"), matching.map(lambda s: "\n" + s)]
        lengths = [schema[k] for k in ("minLength", "maxLength") if k in schema]
        options += [
            st.sampled_from([0, *lengths]).flatmap(lambda n: st.sampled_from(["a" * max(n + d, 0) for d in (-1, 0, 1)]))
        ]
    if kind == "array" or "items" in schema:
        item = near(schema.get("items", {}))
        options.append(st.lists(item, max_size=schema.get("maxItems", 3) + 2))
    if kind == "object" or "properties" in schema:
        fields = {name: near(sub) for name, sub in schema.get("properties", {}).items()}
        known = st.fixed_dictionaries({}, optional=fields)
        unknown = st.dictionaries(st.text(max_size=6), any_json, max_size=2)
        options += [known, st.tuples(known, unknown).map(lambda pair: {**pair[0], **pair[1]})]
        required = schema.get("required", [])
        if required:
            optional = {name: field for name, field in fields.items() if name not in required}
            options.append(st.fixed_dictionaries({name: fields[name] for name in required}, optional=optional))
    return st.one_of(options)


@pytest.mark.parametrize("name", sorted(ALL_SCHEMAS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_a_compiled_schema_passes_exactly_what_jsonschema_passes(name, data):
    schema = ALL_SCHEMAS[name]
    value = data.draw(near(schema))
    assert checks._passes(schema)(value) == checks.validator_class()(schema).is_valid(value), value


def test_valid_requests_take_the_fast_path_and_invalid_ones_are_still_named():
    body = {"lat": 47.0, "lon": 8.0, "alt": 100.0, "battery": 80.0}
    assert checks._passes(SCHEMAS["UAVUpdate"])(body)
    assert checks.check_body("UAVUpdate", body) == body
    with pytest.raises(checks.CommandError) as bad:
        checks.check_body("UAVUpdate", {**body, "battery": 100.5})
    assert bad.value.field == "battery" and "maximum" in str(bad.value)
    with pytest.raises(checks.CommandError) as bad:
        checks.check_body("UAVUpdate", {**body, "speed": 3})
    assert bad.value.field == "speed" and "is not a field here" in str(bad.value)


def test_a_schema_keyword_nobody_compiled_is_refused_by_name():
    with pytest.raises(ValueError, match="'oneOf'"):
        checks._compile({"oneOf": [{"type": "string"}, {"type": "integer"}]})
    with pytest.raises(ValueError, match="type"):
        checks._compile({"type": ["string", "null"]})
    with pytest.raises(ValueError, match="additionalProperties"):
        checks._compile({"additionalProperties": {"type": "string"}})
