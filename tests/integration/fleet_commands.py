"""Fleet commands as raw log-entry bytes, for tests that drive replicas directly."""

from controlplane.state.fleet import encode

STATION = encode({"type": "register_station", "station": "s"})


def register(i: int) -> bytes:
    """Register UAV k<i> at station "s" with battery i (so a read can check the value)."""
    return encode({"type": "register_uav", "uav": f"k{i}", "home_station": "s", "battery": i % 101})
