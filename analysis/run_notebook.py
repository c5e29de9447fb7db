"""Execute analysis/rpc_stats.ipynb headless on a stats dataset and save its plots.

python -m analysis.run_notebook STATS_DIR [--figures DIR] [--output executed.ipynb]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "analysis" / "rpc_stats.ipynb"


def execute(stats: Path, figures: Path, output: Path | None = None, timeout: int = 300) -> list[Path]:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    os.environ["RPC_STATS_DIR"] = str(stats.resolve())
    os.environ["FIG_DIR"] = str(figures.resolve())
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    if output is not None:
        nbformat.write(nb, output)
    return sorted(figures.glob("*.png"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.run_notebook", description=__doc__.splitlines()[0])
    p.add_argument("stats", type=Path)
    p.add_argument("--figures", type=Path, default=ROOT / "analysis" / "figures")
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    if not args.stats.is_dir():
        p.error(f"{args.stats} is not a directory")
    for path in execute(args.stats, args.figures, args.output):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
