"""Stations as hosts of their own: one network namespace per station, each with its own
address on a bridge (veth pairs), loopback up; real partitions with blackhole routes inside
the namespaces. Root only (CI is root). Traffic stays between these namespaces and the
bridge's own address in the root namespace, from which tests reach the stations.

    with StationHosts(3) as hosts:            # uav-<tag>-1..3 at 10.231.<k>.11..13
        hosts.run(1, ["python", "-m", "controlplane", "node"], env=...)
        hosts.cut(1, 2)                       # both directions
        hosts.cut_one_way(1, 3)               # 1 can no longer reach 3
        hosts.heal()

    python -m bench.netns up 3 --tag demo     # the same from a shell; `down --tag demo` removes it

Namespaces are removed on exit, also after a failure, and any left by an earlier run with the
same tag are removed before new ones are made.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import subprocess
import sys
import zlib
from typing import Any

PREFIX = "uav-"
_instances = itertools.count(1)  # each StationHosts of a process gets names of its own


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def available() -> str | None:
    """None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"{PREFIX}probe-{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class StationHosts:
    def __init__(self, count: int, tag: str | None = None) -> None:
        if not 1 <= count <= 50:
            raise ValueError(f"count must be 1..50, got {count}")
        self.count = count
        self.tag = tag or f"{os.getpid() % 100_000}x{next(_instances)}"[:8]
        if not self.tag.isalnum() or len(self.tag) > 8:  # interface names have 15 characters
            raise ValueError(f"tag must be up to 8 letters or digits, got {self.tag!r}")
        # A /24 of its own per tag, so runs side by side never share addresses.
        self.subnet = f"10.231.{zlib.crc32(self.tag.encode()) % 250 + 1}"
        self.bridge = f"uavbr{self.tag}"[:15]
        self.cuts: set[tuple[int, int]] = set()  # (from, to): from's packets to `to` are dropped

    def namespace(self, i: int) -> str:
        return f"{PREFIX}{self.tag}-{i}"

    def address(self, i: int) -> str:
        return f"{self.subnet}.{10 + i}"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge (where tests reach stations from)."""
        return f"{self.subnet}.1"

    def up(self) -> StationHosts:
        self.down()  # leftovers of an earlier run with this tag
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(1, self.count + 1):
                ns, (host_end, ns_end) = self.namespace(i), self._veth(i)
                _ip("netns", "add", ns)
                _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
                _ip("link", "set", ns_end, "netns", ns)
                _ip("link", "set", host_end, "master", self.bridge)
                _ip("link", "set", host_end, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", ns_end)
                _ip("-n", ns, "link", "set", ns_end, "up")
        except BaseException:
            self.down()
            raise
        return self

    def _veth(self, i: int) -> tuple[str, str]:
        return f"uv{self.tag}h{i}"[:15], f"uv{self.tag}n{i}"[:15]

    def down(self) -> None:
        for i in range(1, self.count + 1):
            # The host end first: a namespace's veth pairs go only when the kernel gets round to
            # it after `netns del`, and the same names must be free again at once.
            _ip("link", "del", self._veth(i)[0], check=False)
            _ip("netns", "del", self.namespace(i), check=False)
        _ip("link", "del", self.bridge, check=False)
        self.cuts.clear()

    def __enter__(self) -> StationHosts:
        return self.up()

    def __exit__(self, *exc: Any) -> None:
        self.down()

    # --- processes ----------------------------------------------------------------------------

    def command(self, i: int, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(i), *argv]

    def run(self, i: int, argv: list[str], **popen: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(self.command(i, argv), **popen)

    def kill_all(self, i: int) -> None:
        """Everything running in station i's namespace dies (the host is lost)."""
        pids = _ip("netns", "pids", self.namespace(i), check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)

    # --- partitions ---------------------------------------------------------------------------

    def cut_one_way(self, source: int, target: int) -> None:
        """Station `source` can no longer send to `target` (replies to it are lost too)."""
        if (source, target) not in self.cuts:
            _ip("-n", self.namespace(source), "route", "add", "blackhole", f"{self.address(target)}/32")
            self.cuts.add((source, target))

    def cut(self, a: int, b: int) -> None:
        self.cut_one_way(a, b)
        self.cut_one_way(b, a)

    def isolate(self, i: int) -> None:
        """Station i loses every other station (the root namespace still reaches it)."""
        for j in range(1, self.count + 1):
            if j != i:
                self.cut(i, j)

    def heal(self) -> None:
        for source, target in sorted(self.cuts):
            _ip("-n", self.namespace(source), "route", "del", "blackhole", f"{self.address(target)}/32", check=False)
        self.cuts.clear()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.netns", description="Station namespaces on a bridge")
    p.add_argument("action", choices=["up", "down"])
    p.add_argument("count", type=int, nargs="?", default=3)
    p.add_argument("--tag", default="demo")
    args = p.parse_args(argv)
    why = available()
    if why is not None:
        print(f"bench.netns: {why}", file=sys.stderr)
        return 2
    hosts = StationHosts(args.count, args.tag)
    if args.action == "down":
        hosts.down()
        return 0
    hosts.up()
    for i in range(1, args.count + 1):
        print(f"{hosts.namespace(i)} {hosts.address(i)}")
    print(f"bridge {hosts.bridge} {hosts.gateway}")
    print(f"remove with: python -m bench.netns down {args.count} --tag {args.tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
