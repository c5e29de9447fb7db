"""controlplane.fastjson answers what the standard library's json answers."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane import fastjson

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(min_value=-1e-300, max_value=1e-300)
    | st.text()
    | st.text(alphabet=st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010))  # surrogates included
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)


def outcome(parse, data):
    """What parsing gives, comparable (NaN included), or the error's type."""
    try:
        return "value", json.dumps(parse(data), sort_keys=True, ensure_ascii=True)
    except (ValueError, RecursionError) as exc:
        return "error", type(exc).__name__


@given(documents)
@settings(max_examples=400, deadline=None)
def test_what_json_writes_is_read_as_json_reads_it(document):
    text = json.dumps(document)
    for data in (text, text.encode("utf-8", "surrogatepass")):
        assert outcome(fastjson.loads, data) == outcome(json.loads, data)


@given(st.text(alphabet=' \t\n\r\x0c[]{}:,."\\-+0123456789eEaflnrstuNIfinity\ud800', max_size=40))
@settings(max_examples=400, deadline=None)
def test_any_text_is_read_or_refused_as_json_does(text):
    assert outcome(fastjson.loads, text) == outcome(json.loads, text)


@pytest.mark.parametrize(
    "text",
    ['{"a":1,"a":2}', "1e400", "-1e400", "NaN", "-Infinity", '"\\ud800"', "18446744073709551615",
     "18446744073709551616", "-9223372036854775809", "123456789012345678901234567890.5", "[1,]", "01",
     "\ufeff{}", "0.00012345678901234568", "[" * 3000 + "]" * 3000, '{"id": "uav-1234567890123456789012"}'],
)  # fmt: skip
def test_the_edges_where_orjson_and_json_part(text):
    for data in (text, text.encode("utf-8", "surrogatepass")):
        assert outcome(fastjson.loads, data) == outcome(json.loads, data)


def written(write, value, **kwargs):
    try:
        return "value", json.loads(write(value, **kwargs))
    except (ValueError, TypeError, RecursionError) as exc:
        return "error", type(exc).__name__


def same(a, b):
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@given(documents, st.booleans(), st.booleans())
@settings(max_examples=400, deadline=None)
def test_what_it_writes_reads_back_as_what_json_writes(document, sort_keys, allow_nan):
    ours = written(fastjson.dumps, document, sort_keys=sort_keys, allow_nan=allow_nan)
    theirs = written(
        lambda v, **kw: json.dumps(v, separators=(",", ":"), **kw), document, sort_keys=sort_keys, allow_nan=allow_nan
    )
    assert ours[0] == theirs[0] and same(ours[1], theirs[1])


def test_the_edges_of_writing():
    assert fastjson.dumps({3: 2, 1: [2**70]}, sort_keys=True) == b'{"1":[1180591620717411303424],"3":2}'
    with pytest.raises(TypeError, match="not supported between instances"):  # json's own error
        fastjson.dumps({1: 2, "b": 3}, sort_keys=True)
    nan, null = json.loads(fastjson.dumps([math.nan, None]))  # NaN stays NaN, as json writes it
    assert math.isnan(nan) and null is None
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        fastjson.dumps({"x": math.inf}, allow_nan=False)
    assert fastjson.dumps({"b": 1, "a": "é"}, sort_keys=True) == '{"a":"é","b":1}'.encode()
    assert fastjson.dumps({"b": 1, "a": 2}) == b'{"b":1,"a":2}'


def without_non_finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [without_non_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: without_non_finite(v) for k, v in value.items()}
    return value


@given(documents)
@settings(max_examples=400, deadline=None)
def test_portable_json_is_jsons_meaning_with_non_finite_numbers_as_null(document):
    ours = written(fastjson.dumps_portable, document)
    theirs = written(lambda v: json.dumps(without_non_finite(v), separators=(",", ":")), document)
    if ours[0] == "error":  # only where orjson refuses and json then meets a non-finite number
        assert ours == ("error", "ValueError") and theirs[0] == "value"
        return
    assert theirs[0] == "value" and same(ours[1], theirs[1])


def test_portable_json_writes_nan_as_null_and_what_orjson_refuses_as_json_does():
    assert fastjson.dumps_portable([1.5, math.nan, -math.inf, None]) == b"[1.5,null,null,null]"
    assert fastjson.dumps_portable({1: 2**70}) == b'{"1":1180591620717411303424}'
    with pytest.raises(ValueError, match="Out of range float"):
        fastjson.dumps_portable([2**70, math.nan])
