"""UAVColumns: one row per UAV, its kinematics read back as written, also after the columns grow."""

import numpy as np

from controlplane.state.columns import KINEMATICS, NO_TIME, ROW_FIELDS, UAVColumns


def test_a_row_reads_back_what_was_written_by_row_and_by_column_also_after_growing():
    columns = UAVColumns(capacity=4)
    rows = [columns.allocate(f"u{i}", {"lat": i / 10, "battery": 50.0 + i}) for i in range(9)]  # grows twice
    assert columns.capacity >= 9 and rows == list(range(9))
    columns.set(rows[3], {"alt": 120.5, "vx": -3.0})
    columns.floats["lon"][np.array(rows[5:7])] = [8.25, 8.5]  # a vectorized write, as telemetry's
    columns.set_report(rows[6], 1700.0, 4)
    for i, row in enumerate(rows):
        record = dict(zip(ROW_FIELDS, columns.values(row), strict=True))
        expected = {name: 0.0 for name in KINEMATICS} | {"lat": i / 10, "battery": 50.0 + i}
        expected |= {"alt": 120.5, "vx": -3.0} if i == 3 else {}
        expected |= {5: {"lon": 8.25}, 6: {"lon": 8.5}}.get(i, {})
        report = (1700.0, 4) if i == 6 else (None, None)
        assert record == expected | dict(zip(("report_time", "report_seq"), report, strict=True)), i
        assert all(type(v) is float for v in (record[name] for name in KINEMATICS))
    assert columns.floats["battery"][rows[8]] == 58.0 and columns.report_time[rows[0]] == NO_TIME


def test_set_writes_the_kinematics_a_command_names_and_leaves_the_rest():
    """set() takes a whole command: every kinematic in it (one row write when all are there),
    nothing for its other keys, and the others keep their values when only some are named."""
    columns = UAVColumns(capacity=4)
    row = columns.allocate("u", {"lat": 1.0, "battery": 40.0})
    full = {name: float(i + 1) for i, name in enumerate(KINEMATICS)}
    columns.set(row, {"type": "update_uav", "uav": "u", "seq": 7, **full, "battery": 55})
    assert dict(zip(KINEMATICS, columns.values(row), strict=False)) == full | {"battery": 55.0}
    columns.set(row, {"type": "update_uav", "uav": "u", "alt": 300.5, "vz": -2})
    after = dict(zip(KINEMATICS, columns.values(row), strict=False))
    assert after == full | {"battery": 55.0, "alt": 300.5, "vz": -2.0}
    assert all(type(after[name]) is float for name in KINEMATICS)
