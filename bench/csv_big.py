"""Reading big CSV files: dltrain against pandas, pyarrow and polars, side by side in one run.

    python bench/csv_big.py [--runs 3] [--rows 2000000] [--files realistic,clean,fashion] [--keep DIR]
                            [--plain]

Files (generated into a temporary folder, or DIR with --keep, where they are reused):
  realistic  ROWS rows x 50 float columns (5 decimals) with 1% empty cells, one text column of
             40 categories and a 0/1 target (~0.86 GB at 2,000,000 rows)
  clean      ROWS/2 rows x 50 float columns and a 0/1 target, no empty cell (~0.43 GB)
  fashion    Fashion-MNIST's training CSV (integer pixels), made by
             `python bench/prepare_fashion_mnist.py` (skipped when absent)

Rows of the table (median of --runs, the methods interleaved so machine noise hits all alike).
Each measurement is one child process that reads the file once to warm up (page cache, imports,
compiled kernels, the allocator) and then times one more read: in a shared process one library's
thread pools and allocator slowed the next method (pyarrow made a following `dltrain check` of
Fashion-MNIST 0.35 s slower, in system time):
  dltrain check        commands.check.check on a config for the file (parse, typing, split,
                       fitted preprocessing, model): what `dltrain check` does after start-up
  dltrain read         CsvFile.read alone (the fast path: numba kernels over the bytes)
  dltrain plain read   CsvFile.read by the plain reader (--plain; slow: one run)
  pandas.read_csv, pyarrow.csv.read_csv, polars.read_csv   each library's reader, defaults
The ratio column is each time over pandas.read_csv's. A library that is not installed is left out.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "src"))

from dltrain.commands import check  # noqa: E402
from dltrain.data import fastcsv  # noqa: E402
from dltrain.data.csv import CsvFile  # noqa: E402

FASHION = REPO_ROOT / "data" / "fashion-mnist" / "train.csv"
CATEGORIES = [f"{word}_{index}" for index, word in enumerate(["red", "green", "blue", "amber", "violet"] * 8)]
WRITE_ROWS = 50_000  # rows formatted at a time


def _cells(values: np.ndarray, decimals: int, empty: np.ndarray | None):
    """Bytes of each value as %.{decimals}f (|value| < 100) in fixed slots, and which bytes count."""
    scale = 10**decimals
    scaled = np.abs(np.rint(values * scale).astype(np.int64))
    whole, fraction = np.divmod(scaled, scale)
    whole = np.minimum(whole, 99)
    slots = np.zeros(values.shape + (4 + decimals,), dtype=np.uint8)
    used = np.zeros(slots.shape, dtype=bool)
    slots[..., 0], used[..., 0] = ord("-"), values < 0
    slots[..., 1], used[..., 1] = ord("0") + whole // 10, whole >= 10
    slots[..., 2], used[..., 2] = ord("0") + whole % 10, True
    slots[..., 3], used[..., 3] = ord("."), True
    for digit in range(decimals):
        slots[..., 4 + digit] = ord("0") + (fraction // 10 ** (decimals - 1 - digit)) % 10
    used[..., 4:] = True
    if empty is not None:
        used[empty] = False
    return slots, used


def _text_cells(codes: np.ndarray):
    width = max(map(len, CATEGORIES))
    table = np.zeros((len(CATEGORIES), width), dtype=np.uint8)
    lengths = np.array([len(name) for name in CATEGORIES])
    for index, name in enumerate(CATEGORIES):
        table[index, : len(name)] = np.frombuffer(name.encode(), dtype=np.uint8)
    return table[codes], np.arange(width) < lengths[codes][:, None]


def write_csv(path: Path, rows: int, empty_fraction: float, text: bool, seed: int) -> None:
    """A CSV of ``rows`` rows x 50 floats (+ a text column) + a 0/1 target, written block by block."""
    rng = np.random.default_rng(seed)
    n_float = 50
    names = [f"f{index}" for index in range(n_float)]
    header = names[:25] + (["color"] if text else []) + names[25:] + ["target"]
    weights = rng.standard_normal(n_float)
    with open(path, "wb") as handle:
        handle.write((",".join(header) + "\n").encode())
        for start in range(0, rows, WRITE_ROWS):
            count = min(WRITE_ROWS, rows - start)
            values = rng.standard_normal((count, n_float))
            empty = rng.random((count, n_float)) < empty_fraction if empty_fraction else None
            target = (values @ weights + rng.standard_normal(count) > 0).astype(np.uint8)
            cells, used = _cells(values, 5, empty)
            pieces, masks = [], []
            comma = np.full((count, 1), ord(","), dtype=np.uint8)
            ones = np.ones((count, 1), dtype=bool)
            for column in range(n_float):
                if text and column == 25:
                    text_bytes, text_used = _text_cells(rng.integers(0, len(CATEGORIES), count))
                    pieces += [text_bytes, comma]
                    masks += [text_used, ones]
                pieces += [cells[:, column], comma]
                masks += [used[:, column], ones]
            pieces += [(ord("0") + target)[:, None], np.full((count, 1), ord("\n"), dtype=np.uint8)]
            masks += [ones, ones]
            handle.write(np.concatenate(pieces, axis=1)[np.concatenate(masks, axis=1)].tobytes())


def realistic_file(folder: Path, rows: int) -> Path:
    """``folder/realistic-ROWS.csv``: the issue's file (50 floats, 1% empty, a text column of 40
    categories, a 0/1 target) with ``rows`` rows, seed 10; written if it is not there yet."""
    path = folder / f"realistic-{rows}.csv"
    if not path.is_file():
        started = time.perf_counter()
        write_csv(path, rows, 0.01, True, seed=10)
        print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - started:.0f} s")
    return path


def prepare(folder: Path, names: list, rows: int) -> dict:
    """name -> (csv path, config path) for the files asked for, generated unless already there."""
    files = {}
    for name in names:
        if name == "fashion":
            if not FASHION.is_file():
                print(f"{FASHION} not found: run `python bench/prepare_fashion_mnist.py` first; skipped", flush=True)
                continue
            path, target, missing = FASHION, "label", "error"
        else:
            path = folder / f"{name}.csv"
            target, missing = "target", "mean"
            if not path.is_file():
                started = time.perf_counter()
                realistic = name == "realistic"
                write_csv(path, rows if realistic else rows // 2, 0.01 if realistic else 0.0, realistic, seed=len(name))
                print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s")
        config = folder / f"{name}.yaml"
        config.write_text(
            f"name: {name}\nseed: 0\n"
            f"data: {{train: {path.resolve()}, target: {target}, missing: {missing}, validation: 0.2, cache: false}}\n"
            "model: {layers: [{units: 64, activation: relu}]}\ntrain: {epochs: 1, batch_size: 256}\n"
        )
        files[name] = (path, config)
    return files


def _dltrain_read(path: Path) -> None:
    table = CsvFile.open(path)
    target = table.header[-1] if "label" not in table.header else "label"
    table.read(numeric=[name for name in table.header if name != target], wide=[target])


def _plain_read(path: Path) -> None:
    usable = fastcsv.usable
    fastcsv.usable = lambda *args: False
    try:
        _dltrain_read(path)
    finally:
        fastcsv.usable = usable


def methods(path: Path, config: Path, plain: bool) -> dict:
    found = {
        "dltrain check": lambda: check.check(config),
        "dltrain read": lambda: _dltrain_read(path),
    }
    if plain:
        found["dltrain plain read"] = lambda: _plain_read(path)
    try:
        import pandas

        found["pandas.read_csv"] = lambda: pandas.read_csv(path)
    except ImportError:
        pass
    try:
        import pyarrow.csv

        found["pyarrow.csv.read_csv"] = lambda: pyarrow.csv.read_csv(path)
    except ImportError:
        pass
    try:
        import polars

        found["polars.read_csv"] = lambda: polars.read_csv(path)
    except ImportError:
        pass
    return found


def _child(method: str, path: Path, config: Path, plain: bool) -> None:
    """One measurement in this process: a warm-up call, then one timed call (printed, seconds)."""
    function = methods(path, config, plain)[method]
    if method != "dltrain plain read":
        function()
    gc.collect()
    started = time.perf_counter()
    function()
    print(f"{time.perf_counter() - started:.6f}")


def _measured(method: str, path: Path, config: Path, plain: bool) -> float:
    command = [sys.executable, __file__, "--child", method, str(path), str(config)] + (["--plain"] if plain else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{method} on {path} failed:\n{done.stderr}")
    return float(done.stdout.split()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--files", default="realistic,clean,fashion")
    parser.add_argument("--keep", type=Path, help="generate the files here and keep them for the next run")
    parser.add_argument("--plain", action="store_true", help="also time the plain reader (one run: it is slow)")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "CSV", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], Path(args.child[1]), Path(args.child[2]), args.plain)
        return 0
    folder = args.keep or Path(tempfile.mkdtemp(prefix="dltrain-csv-big-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        files = prepare(folder, args.files.split(","), args.rows)
        for name, (path, config) in files.items():
            table = methods(path, config, args.plain)
            times: dict = {method: [] for method in table}
            for run in range(args.runs):
                for method in table:
                    if method == "dltrain plain read" and run:
                        continue
                    times[method].append(_measured(method, path, config, args.plain))
            medians = {method: statistics.median(values) for method, values in times.items()}
            reference = medians.get("pandas.read_csv")
            print(f"\n{name}: {path.name}, {path.stat().st_size / 1e6:.0f} MB; median of {args.runs} runs")
            print("| method | seconds | vs pandas.read_csv |")
            print("|---|---:|---:|")
            for method, seconds in medians.items():
                ratio = f"{seconds / reference:.2f}x" if reference else ""
                print(f"| {method} | {seconds:.2f} | {ratio} |")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
