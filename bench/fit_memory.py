"""`dltrain fit` on big CSVs: peak anonymous memory, and an epoch from the on-disk store against
one from memory, side by side in one run.

    python bench/fit_memory.py [--rows 2000000] [--scale 4] [--runs 3] [--keep DIR]

Files (bench/csv_big.py's generator, into a temporary folder, or DIR with --keep, where they are
reused): ROWS rows x 50 float columns (1% empty cells), one text column of 40 categories and a
0/1 target (~0.82 GB at 2,000,000 rows), and the same with SCALE x the rows.

Each fit is `dltrain fit` in a child process (1 epoch, one hidden layer of 64, batch 256,
validation 0.2, missing: mean), its RssAnon read from /proc/PID/status every 10 ms: anonymous
memory, what the process itself holds (the store's file pages belong to the page cache, which
the kernel gives back under pressure). Rows of the table, medians of --runs:

  fit, store, first      data.store: true, no cache entry yet: parses the CSV into the store
  fit, store             data.store: true, the store already in the cache (its pages in the
                         page cache: the machine has the memory)
  fit, memory            data.store: false: the file parsed whole into memory (only ROWS)
  epoch, store / memory  the epoch's seconds (history.csv) of the two fits before; their ratio

Linux only (/proc).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "bench"))

from csv_big import realistic_file  # noqa: E402

CONFIG = """name: big
seed: 0
data: {{train: {csv}, target: target, missing: mean, validation: 0.2, store: {store}}}
model: {{layers: [{{units: 64, activation: relu}}]}}
train: {{epochs: 1, batch_size: 256}}
"""


def rss_anon(pid: int) -> int:
    """The process's anonymous resident memory in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measured_fit(folder: Path, csv_path: Path, store: bool, out: str) -> dict:
    """One `dltrain fit` in a child process: its peak RssAnon, wall time, and epoch seconds."""
    config = folder / f"{out}.yaml"
    config.write_text(CONFIG.format(csv=csv_path.resolve(), store=str(store).lower()))
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "dltrain", "fit", str(config), "--out", str(folder / out), "--force", "--quiet"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    peak = 0
    while child.poll() is None:
        peak = max(peak, rss_anon(child.pid))
        time.sleep(0.01)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"dltrain fit failed: {child.stderr.read().decode() if child.stderr else ''}")
    with open(folder / out / "history.csv") as handle:
        epoch = float(next(csv.DictReader(handle))["seconds"])
    return {"peak": peak, "wall": wall, "epoch": epoch}


def _median(results: list, key: str) -> float:
    return statistics.median(result[key] for result in results)


def _row(name: str, results: list) -> None:
    print(
        f"{name:<28} peak RssAnon {_median(results, 'peak') / 1e6:7.0f} MB   "
        f"fit {_median(results, 'wall'):6.1f} s   epoch {_median(results, 'epoch'):6.1f} s",
        flush=True,
    )


def bench_file(folder: Path, csv_path: Path, runs: int, with_memory: bool) -> dict:
    cache = folder / ".dltrain-cache"
    first, stored, memory = [], [], []
    for _ in range(runs):  # interleaved, so that the machine's load falls on each alike
        shutil.rmtree(cache, ignore_errors=True)
        first.append(measured_fit(folder, csv_path, True, "store-first"))
        stored.append(measured_fit(folder, csv_path, True, "store"))
        if with_memory:
            memory.append(measured_fit(folder, csv_path, False, "memory"))
    size = csv_path.stat().st_size / 1e9
    print(f"\n{csv_path.name} ({size:.2f} GB), {runs} runs:")
    _row("fit, store, first", first)
    _row("fit, store", stored)
    if with_memory:
        _row("fit, memory", memory)
        ratio = statistics.median(s["epoch"] / m["epoch"] for s, m in zip(stored, memory))
        print(f"{'epoch store / memory':<28} {ratio:.2f}x (median of the runs' ratios)", flush=True)
    return {"first": first, "store": stored, "memory": memory}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--scale", type=int, default=4, help="the second file has this many times the rows (0: none)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="generate the files here and keep them for the next run")
    args = parser.parse_args(argv)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="dltrain-fit-memory-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        sizes = [args.rows] + ([args.rows * args.scale] if args.scale else [])
        results = {}
        for rows in sizes:
            path = realistic_file(folder, rows)
            results[rows] = bench_file(folder, path, args.runs, with_memory=rows == args.rows)
        if len(sizes) == 2:
            small, large = (_median(results[rows]["store"], "peak") for rows in sizes)
            print(f"\npeak at {args.scale}x the rows / at {args.rows:,} rows (fit, store): {large / small:.2f}x")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
