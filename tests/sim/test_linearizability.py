"""The checker must reject what is not linearizable, not just accept what is."""

import math

import pytest

from controlplane.sim.linearizability import Operation, check_history


def w(client, value, call, ret, key="x"):
    return Operation(client, key, "write", value, call, ret)


def r(client, value, call, ret, key="x"):
    return Operation(client, key, "read", value, call, ret)


def test_sequential_history_is_linearizable():
    assert check_history([w(1, 1, 0, 1), r(2, 1, 2, 3), w(1, 2, 4, 5), r(2, 2, 6, 7)]).ok


def test_reading_a_value_never_written_is_not():
    assert not check_history([w(1, 1, 0, 1), r(2, 7, 2, 3)]).ok


def test_stale_read_after_a_completed_write_is_not():
    # The write of 2 finished before the read began; reading 1 goes back in time.
    assert not check_history([w(1, 1, 0, 1), w(1, 2, 2, 3), r(2, 1, 4, 5)]).ok


def test_concurrent_read_may_see_either_value():
    assert check_history([w(1, 1, 0, 1), w(1, 2, 2, 10), r(2, 1, 3, 4)]).ok
    assert check_history([w(1, 1, 0, 1), w(1, 2, 2, 10), r(2, 2, 3, 4)]).ok


def test_reads_must_not_flip_flop():
    # Two sequential reads during one write: once 2 is seen, 1 may not come back.
    history = [w(1, 1, 0, 1), w(1, 2, 2, 20), r(2, 2, 3, 4), r(2, 1, 5, 6)]
    assert not check_history(history).ok


def test_a_timed_out_write_may_or_may_not_have_happened():
    lost = w(1, 5, 0, math.inf)
    assert check_history([lost, r(2, None, 10, 11)]).ok
    assert check_history([lost, r(2, 5, 10, 11)]).ok
    # ...but it cannot take effect before it was called.
    assert not check_history([r(2, 5, 0, 1), w(1, 5, 2, math.inf)]).ok


def test_keys_are_checked_independently_and_the_failing_key_is_named():
    history = [w(1, 1, 0, 1, key="a"), r(2, 1, 2, 3, key="a"), w(1, 9, 0, 1, key="b"), r(2, 8, 2, 3, key="b")]
    result = check_history(history)
    assert not result.ok and result.failing_key == "b"


def test_initial_value_is_respected():
    assert check_history([r(1, None, 0, 1)]).ok
    assert not check_history([r(1, 3, 0, 1)]).ok
    assert check_history([r(1, 3, 0, 1)], initial=3).ok


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="kind"):
        check_history([Operation(1, "x", "cas", 1, 0, 1)])
    with pytest.raises(ValueError, match="before it is called"):
        check_history([w(1, 1, 5, 1)])


def test_many_concurrent_clients_stay_tractable():
    ops = []
    for i in range(30):
        ops.append(w(i % 5, i, i * 2, i * 2 + 7))
        ops.append(r((i + 1) % 5, i, i * 2 + 6, i * 2 + 9))
    assert check_history(ops).ok
