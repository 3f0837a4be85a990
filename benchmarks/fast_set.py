#!/usr/bin/env python3
"""How long the fast test set takes: ``pytest -m "not slow"`` timed, as a figure
(a benchmark, not a timed test; the README quotes it).

    .venv/bin/python benchmarks/fast_set.py [--runs 3]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    walls = []
    for _ in range(args.runs):
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow"],
                              cwd=ROOT, capture_output=True, text=True)
        walls.append(time.monotonic() - start)
        tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
        if proc.returncode != 0:
            print(f"the fast set failed: {tail}", file=sys.stderr)
            return 1
        passed = re.search(r"(\d+) passed", tail)
        print(f"run {len(walls)}: {walls[-1]:.1f} s wall, {passed.group(1) if passed else '?'} tests passed")
    walls.sort()
    print(f"fast set: median {walls[len(walls) // 2]:.1f} s, best {walls[0]:.1f} s over {len(walls)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
