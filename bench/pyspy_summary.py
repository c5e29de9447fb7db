"""Summarise a py-spy raw profile (`py-spy record -f raw -o FILE -p PID`): the functions
with the most samples, inclusive and self, as shares of all samples.

    python -m bench.pyspy_summary FILE [--top 25]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def summarise(text: str) -> tuple[int, Counter[str], Counter[str]]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return total, inclusive, own


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", type=Path)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    if not args.file.is_file():
        p.error(f"no such file: {args.file}")
    total, inclusive, own = summarise(args.file.read_text(errors="replace"))
    if total == 0:
        p.error(f"{args.file} holds no py-spy raw samples")
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"-- {title}")
        for frame, n in counter.most_common(args.top):
            print(f"{n / total:6.1%}  {frame}")


if __name__ == "__main__":
    main()
