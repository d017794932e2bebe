"""Date parsing: dltrain's skeleton parser against `datetime.strptime` per cell, side by side.

    python bench/date_parse.py [--rows 1000000] [--runs 3]

Cells are ISO timestamps ('2000-01-01 00:07'), one every 7 minutes. Each side parses the same
cells to calendar fields; medians of the runs, timed in turn.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dltrain.data.dates import parse_dates  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    moments = np.datetime64("2000-01-01T00:00") + np.arange(args.rows) * np.timedelta64(7, "m")
    cells = np.char.replace(np.datetime_as_string(moments).astype(str), "T", " ")
    listed = cells.tolist()
    ours, theirs = [], []
    for _ in range(args.runs):
        started = time.perf_counter()
        parsed = parse_dates(cells, "%Y-%m-%d")
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        fields = [datetime.datetime.strptime(cell, "%Y-%m-%d %H:%M") for cell in listed]
        theirs.append(time.perf_counter() - started)
    assert not parsed.bad.any() and fields[-1].minute == int(parsed.minute[-1])
    ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
    print(f"{args.rows:,} timestamps, median of {args.runs} runs:")
    print(f"  dltrain parse_dates       {ours_median:7.2f} s")
    print(f"  datetime.strptime per cell {theirs_median:6.2f} s")
    print(f"  ratio                      {ours_median / theirs_median:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
