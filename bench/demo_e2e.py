"""Benchmark: wall-clock time of ``demotrace demo`` (the README's first command without the
install), per step.

One command::

    .venv/bin/python bench/demo_e2e.py [--runs 1] [--out /tmp/demo-bench]

Runs ``demotrace demo --out OUT`` ``--runs`` times in a row (each run starts afresh in OUT) and
prints, per step, the median seconds taken (from each run's ``demo-summary.json``), the total
wall clock measured here around the subprocess, the load average before and after, and the
machine. Target (issue 7): the whole demo well under 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    """Parse arguments, run the demo, print the table (Markdown)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/demo-bench"))
    args = ap.parse_args()
    exe = str(Path(sys.executable).parent / "demotrace")
    per_step: dict[str, list[float]] = {}
    totals: list[float] = []
    load0 = os.getloadavg()
    for _ in range(args.runs):
        t0 = time.monotonic()
        proc = subprocess.run([exe, "demo", "--out", str(args.out)], capture_output=True, text=True, check=False)
        totals.append(time.monotonic() - t0)
        if proc.returncode != 0:
            sys.exit(f"demotrace demo failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        for st in json.loads((args.out / "demo-summary.json").read_text())["steps"]:
            per_step.setdefault(st["name"], []).append(st["seconds"])
    load1 = os.getloadavg()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}; load average (1 min) {load0[0]:.1f} before, {load1[0]:.1f} after; "
          f"{args.runs} run(s), medians.\n")
    print("| step | seconds |\n|---|---:|")
    for name, xs in per_step.items():
        print(f"| {name} | {statistics.median(xs):.1f} |")
    print(f"| **total (wall clock, incl. CLI start-ups)** | **{statistics.median(totals):.1f}** |")


if __name__ == "__main__":
    main()
