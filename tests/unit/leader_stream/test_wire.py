"""What the leader stream's replica side accepts from a frame, request by request: a
well-formed proposal or query becomes one, anything else an "invalid" answer naming why (or,
without an id to answer to, the whole frame refused)."""

from __future__ import annotations

import json

import pytest

from controlplane.leader_stream.wire import Proposal, Query, decode_requests, encode

GOOD = [
    ([1, "propose", '{"type":"checkpoint"}', 5], Proposal(1, b'{"type":"checkpoint"}', 5.0)),
    ([2, "propose", "x", 0.25], Proposal(2, b"x", 0.25)),
    ([3, "propose", "é", 60], Proposal(3, "é".encode(), 60.0)),
    ([4, "query", "uav", {"id": "u1"}, "linearizable"], Query(4, "uav", {"id": "u1"}, "linearizable")),
    ([5, "query", "stations", None, "stale"], Query(5, "stations", None, "stale")),
]

INVALID = [
    ([6, "propose", "x", 0], "timeout"),
    ([7, "propose", "x", 60.5], "timeout"),
    ([8, "propose", "x", -1], "timeout"),
    ([9, "propose", "x", True], "expected"),
    ([10, "propose", "x", "5"], "expected"),
    ([11, "propose", {"type": "checkpoint"}, 5], "expected"),
    ([12, "propose", "x"], "expected"),
    ([13, "propose", "x", 5, 6], "expected"),
    ([14, "query", "uav", {"id": "u1"}, "eventual"], "consistency"),
    ([15, "query", "uav", ["id"], "stale"], "expected"),
    ([16, "query", 7, None, "stale"], "expected"),
    ([17, "query", "uav", None, None], "expected"),
    ([18, "query", "uav", None], "expected"),
    ([19, "ask", "uav", None, "stale"], "expected"),
    ([20], "expected"),
]


def test_each_well_formed_request_is_read_as_sent():
    requests, invalid = decode_requests(encode([item for item, _ in GOOD]))
    assert invalid == []
    assert requests == [expected for _, expected in GOOD]
    assert [type(r) for r in requests] == [type(expected) for _, expected in GOOD]
    assert all(type(r.timeout) is float for r in requests if isinstance(r, Proposal))


@pytest.mark.parametrize(("item", "named"), INVALID, ids=[str(item) for item, _ in INVALID])
def test_a_malformed_request_gets_an_invalid_answer_naming_why(item, named):
    requests, invalid = decode_requests(encode([GOOD[0][0], item]))
    assert requests == [GOOD[0][1]]  # the frame's other requests still stand
    assert len(invalid) == 1
    rid, kind, why = invalid[0]
    assert (rid, kind) == (item[0], "invalid")
    assert named in why


def test_a_nan_timeout_is_invalid():
    requests, invalid = decode_requests('[[1, "propose", "x", NaN]]')
    assert requests == [] and invalid[0][:2] == [1, "invalid"] and "timeout" in invalid[0][2]


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        '{"id": 1}',
        "[1]",
        '[["1", "query", "uav", null, "stale"]]',
        '[[true, "query", "uav", null, "stale"]]',
        '[[1.0, "query", "uav", null, "stale"]]',
        "[[]]",
        '[{"id": 1}]',
    ],
)
def test_a_frame_without_ids_to_answer_is_refused_whole(frame):
    with pytest.raises(ValueError):
        decode_requests(frame)


def test_answers_encode_compactly():
    assert encode([[1, "ok", {"a": 1}]]) == json.dumps([[1, "ok", {"a": 1}]], separators=(",", ":"))


def test_a_non_finite_number_travels_as_null_the_json_word_for_none():
    frame = encode([[1, "query", "uavs", {"bbox": [float("nan"), 0, 1, float("inf")]}, "stale"]])
    requests, invalid = decode_requests(frame)
    assert invalid == [] and requests[0].args == {"bbox": [None, 0, 1, None]}
