"""The fault campaign on station hosts (bench/netns_chaos.py): real partitions between
network namespaces, lost hosts, Ray across them. The quick campaign (3 replicas: leader
isolated, one-way cut, station lost) runs in the default test command; the full one (5
replicas, 2|3 split, stations returning with and without their disks) with `-m chaos`."""

from __future__ import annotations

import json

import pytest

from bench.netns_chaos import run_campaign
from tests.e2e.conftest import need_station_namespaces


@pytest.fixture(autouse=True)
def namespaces():
    need_station_namespaces()


def check(report: dict, faults: list[str]) -> None:
    print(json.dumps(report, indent=1))
    assert [f["fault"] for f in report["faults"]] == faults
    assert report["linearizable"], f"not linearizable at key {report['failing_key']}"
    assert report["lost_acknowledged_writes"] == 0
    assert report["minority_writes"]["attempts"] > 0 and report["minority_writes"]["acknowledged"] == 0
    assert report["digests_equal"]
    assert report["acknowledged_writes"] > 20
    lost = next(f for f in report["faults"] if f["fault"] == "station lost")
    assert lost["replacement"]["reason"] == "station_lost" and lost["replacement"]["to"] != lost["station"]
    assert lost["replaced_after_s"] <= report["grace_s"] + 10
    assert report["ok"]


def test_quick_campaign_on_station_hosts():
    report = run_campaign(replicas=3, grace=6.0, quick=True)
    check(report, ["leader isolated", "one-way cut, follower to leader", "station lost"])


@pytest.mark.slow
@pytest.mark.chaos
def test_full_campaign_on_station_hosts():
    report = run_campaign(replicas=5, grace=10.0, quick=False)
    check(
        report,
        ["leader isolated", "2|3 split, leader on the 2 side", "one-way cut, follower to leader",
         "station returning on its disk", "station returning without its disk", "station lost"],
    )  # fmt: skip
    without_disk = next(f for f in report["faults"] if f["fault"] == "station returning without its disk")
    assert without_disk["replacement"]["reason"] == "lost_disk"
    assert without_disk["replacement"]["to"] == without_disk["station"]
