"""Stations as separate Ray nodes on this machine (ray.cluster_utils.Cluster): a head
without stations and one node per station, so a station can be killed and brought back."""

from __future__ import annotations

import os
import signal
from typing import Any


class StationNodes:
    def __init__(self, stations: list[str]) -> None:
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        self.nodes = {s: self._add(s) for s in stations}

    def _add(self, station: str) -> Any:
        return self.cluster.add_node(num_cpus=1, resources={f"station:{station}": 1})

    def kill(self, station: str, worker_pids: list[int]) -> None:
        """SIGKILL the node's processes: Ray's remove_node kills the raylet and its stores,
        but a worker outlives its raylet for a while (and a leader keeps leading meanwhile)."""
        for pid in worker_pids:
            os.kill(pid, signal.SIGKILL)
        self.cluster.remove_node(self.nodes.pop(station), allow_graceful=False)

    def revive(self, station: str) -> None:
        """A fresh node offering the station again (its replica restarts there, on its data)."""
        self.nodes[station] = self._add(station)

    def shutdown(self) -> None:
        self.cluster.shutdown()
