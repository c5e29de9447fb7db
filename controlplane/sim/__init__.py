"""Deterministic simulation of Raft clusters: one seed drives network, disks, clocks and
faults; safety invariants are checked after every step and client histories for
linearizability at the end. Run it with `python -m controlplane.sim --help`."""
