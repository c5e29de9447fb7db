"""python -m controlplane <command>: `demo` (the main job) or `sim` (the Raft simulator)."""

from __future__ import annotations

import sys


def main() -> int:
    commands = {"demo": "the Ray demo: deploy, write, kill the leader, recover", "sim": "the Raft simulator"}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print("usage: python -m controlplane {demo,sim} [options]", file=sys.stderr)
        for name, text in commands.items():
            print(f"  {name:<5} {text}", file=sys.stderr)
        return 2
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "demo":
        from controlplane.demo import main as demo_main

        return demo_main(rest)
    from controlplane.sim.__main__ import main as sim_main

    return sim_main(rest)


if __name__ == "__main__":
    sys.exit(main())
