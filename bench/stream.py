"""`dltrain predict --out` and `dltrain eval` on a big CSV: peak anonymous memory and time, against
a pandas script doing the same work, side by side in one run.

    python bench/stream.py [--rows 2000000] [--scale 0] [--runs 3] [--scale-runs 1] [--keep DIR]
                           [--before OTHER_CHECKOUT/src]

Files (bench/csv_big.py's generator, into a temporary folder, or DIR with --keep, where they are
reused): ROWS rows x 50 float columns (1% empty cells), one text column of 40 categories and a
0/1 target (~0.82 GB at 2,000,000 rows); with --scale K also K x the rows. The run predicted
with is trained first on the big file's first 100,000 rows (one hidden layer of 64, one epoch).

Each command runs in a child process, its RssAnon read from /proc/PID/status every 10 ms
(anonymous memory: what the process holds, not the page cache's copy of the file):

  dltrain predict --out    the CSV of predictions (label, prob_0, prob_1), a block at a time
  dltrain eval             loss and metrics, a chunk at a time
  pandas script            pandas.read_csv, the run's preprocessing (fills, one-hot, scaling)
                           and its two matrix products in NumPy, DataFrame.to_csv of the same
                           three columns: what a user would write by hand (not on the --scale
                           file: it holds the whole file in memory)

Medians of --runs, the three interleaved so that the machine's load falls on each alike; the
ratio is dltrain predict's time over the pandas script's. With --before, predict and eval of
another checkout (its src folder: the code before a change) run too, in the first round only
(the whole-file code is slow). Linux only (/proc).
"""

from __future__ import annotations

import argparse
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

from csv_big import realistic_file, write_csv  # noqa: E402
from fit_memory import rss_anon  # noqa: E402

CONFIG = """name: stream
seed: 0
data: {{train: {csv}, target: target, missing: mean, validation: 0.1}}
model: {{layers: [{{units: 64, activation: relu}}]}}
train: {{epochs: 1, batch_size: 256}}
"""

PANDAS_SCRIPT = """
import json, sys
import numpy as np, pandas as pd
run, data, out = sys.argv[1:4]
manifest = json.load(open(f"{run}/model.json"))
schema = manifest["data"]
weights = np.load(f"{run}/model.npz", allow_pickle=False)
frame = pd.read_csv(data)
columns = []
for column in schema["columns"]:
    name = column["name"]
    if column.get("categories"):  # one-hot, in the stored order
        cells = frame[name].to_numpy()
        columns += [(cells == category).astype(np.float32) for category in column["categories"]]
    else:
        columns.append(frame[name].fillna(column["fill"]).to_numpy(np.float32))
features = np.column_stack(columns)
features -= np.asarray(schema["scaler"]["offset"], dtype=np.float32)
features /= np.asarray(schema["scaler"]["divisor"], dtype=np.float32)
hidden = np.maximum(features @ weights["dense_0.W"] + weights["dense_0.b"], 0)
logits = hidden @ weights["dense_1.W"] + weights["dense_1.b"]
positive = 1 / (1 + np.exp(-logits[:, 0]))
labels = np.asarray(schema["class_labels"])[(positive >= 0.5).astype(int)]
pd.DataFrame({"target": labels, "prob_0": 1 - positive, "prob_1": positive}).to_csv(out, index=False)
"""


def measured(command: list, cwd: Path, source: Path | None = None) -> dict:
    """A command in a child process (dltrain from ``source`` when given): its peak RssAnon and wall time."""
    env = dict(os.environ, PYTHONPATH=str(source)) if source else None
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak = 0
    while child.poll() is None:
        peak = max(peak, rss_anon(child.pid))
        time.sleep(0.01)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed: {child.stderr.read().decode() if child.stderr else ''}")
    return {"peak": peak, "wall": wall}


def trained_run(folder: Path, before: Path | None) -> Path:
    """A run trained on 100,000 rows like the big file's (made once per folder); by the --before
    checkout when there is one, as older code cannot read newer run folders (newer code reads older)."""
    run = folder / "run"
    if not (run / "model.json").is_file():
        train = folder / "train-100000.csv"
        write_csv(train, 100_000, 0.01, True, seed=10)  # the big file's first rows
        (folder / "stream.yaml").write_text(CONFIG.format(csv=train.resolve()))
        command = [sys.executable, "-m", "dltrain", "fit", str(folder / "stream.yaml"), "--out", str(run), "--force"]
        env = dict(os.environ, PYTHONPATH=str(before)) if before else None
        subprocess.run([*command, "--quiet"], check=True, env=env)
    return run


def warm_up(folder: Path, run: Path, before: Path | None) -> None:
    """Each side's compiled kernels loaded once (compiled, on a fresh checkout) on the first rows of
    the training file, so that no timed run pays for a compilation."""
    for source in [None] + ([before] if before else []):
        for command in (["predict", "--out", str(folder / "warm.csv")], ["eval"]):
            arguments = [command[0], str(run), str(folder / "train-100000.csv"), *command[1:], "--quiet"]
            measured([sys.executable, "-m", "dltrain", *arguments], folder, source)


def bench_file(folder: Path, run: Path, csv_path: Path, runs: int, before: Path | None, with_pandas: bool) -> dict:
    dltrain = [sys.executable, "-m", "dltrain"]
    predict = [*dltrain, "predict", str(run), str(csv_path), "--out", str(folder / "p.csv"), "--quiet"]
    evaluate = [*dltrain, "eval", str(run), str(csv_path), "--json", "--quiet"]
    commands = {
        "dltrain predict --out": (predict, None),
        "dltrain eval": (evaluate, None),
    }
    if with_pandas:  # not on the --scale file: pandas holds the whole file, 1.75 GB a million rows here
        pandas = [sys.executable, "-c", PANDAS_SCRIPT, str(run), str(csv_path), str(folder / "pd.csv")]
        commands["pandas script"] = (pandas, None)
    if before:
        commands["predict --out, before"] = (predict[:-3] + ["--out", str(folder / "p-before.csv"), "--quiet"], before)
        commands["eval, before"] = (evaluate, before)
    results: dict = {name: [] for name in commands}
    for round_ in range(runs):
        for name, (command, source) in commands.items():
            if source is None or round_ == 0:
                results[name].append(measured(command, folder, source))
    print(f"\n{csv_path.name} ({csv_path.stat().st_size / 1e9:.2f} GB), {runs} runs, medians:")
    for name, measures in results.items():
        peak = statistics.median(m["peak"] for m in measures) / 1e6
        wall = statistics.median(m["wall"] for m in measures)
        print(f"  {name:<24} peak RssAnon {peak:6.0f} MB   {wall:6.1f} s   ({len(measures)} runs)", flush=True)
    if with_pandas:
        pairs = zip(results["dltrain predict --out"], results["pandas script"])
        ratio = statistics.median(p["wall"] / q["wall"] for p, q in pairs)
        print(f"  {'predict / pandas':<24} {ratio:.2f}x (median of the runs' ratios)", flush=True)
    if before and (folder / "p-before.csv").read_bytes() == (folder / "p.csv").read_bytes():
        print("  predictions: the same bytes before and after", flush=True)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--scale", type=int, default=0, help="also a file of this many times the rows (0: none)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale-runs", type=int, default=1, help="runs on the --scale file (slow)")
    parser.add_argument("--keep", type=Path, help="generate the files here and keep them for the next run")
    parser.add_argument("--before", type=Path, help="another checkout's src folder: its predict and eval too")
    args = parser.parse_args(argv)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="dltrain-stream-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        run = trained_run(folder, args.before)
        warm_up(folder, run, args.before)
        peaks = []
        for rows in [args.rows] + ([args.rows * args.scale] if args.scale else []):
            path = realistic_file(folder, rows)
            first = rows == args.rows
            runs, before = (args.runs, args.before) if first else (args.scale_runs, None)
            results = bench_file(folder, run, path, runs, before, with_pandas=first)
            peaks.append({name: statistics.median(m["peak"] for m in measures) for name, measures in results.items()})
            print(f"  load average after: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} CPUs", flush=True)
        if len(peaks) == 2:
            for name in ("dltrain predict --out", "dltrain eval"):
                ratio = peaks[1][name] / peaks[0][name]
                print(f"peak at {args.scale}x the rows / at {args.rows:,} rows, {name}: {ratio:.2f}x")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
