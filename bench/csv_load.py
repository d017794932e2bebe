"""Load time and peak memory of dltrain's CSV reader and its parsed-data cache, side by side with NumPy.

    python bench/prepare_fashion_mnist.py            # once: data/fashion-mnist/train.csv
    python bench/csv_load.py [--runs 5] [CSV]

Rows of the table (median of --runs, the methods interleaved so machine noise hits all alike):
  numpy.loadtxt float32        what the spine did: NumPy's C parser straight to float32
  numpy.loadtxt int32          NumPy's C parser at its fastest (integers), for reference
  dltrain parse                CsvFile.read: block-wise loadtxt, integers first, into one float32 matrix
  dltrain first fit            the same through the cache: hash the file, parse, write the entry
  dltrain cached fit           the cache hit of the next fit (content hash trusted from the file's stat)
  dltrain cached, rehashed     a cache hit that re-reads the file to check its SHA-256
Peak memory is measured with tracemalloc (NumPy reports its buffers to it) around one load,
as a multiple of the float32 feature matrix.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "src"))

from dltrain.data import cache as datacache  # noqa: E402
from dltrain.data.csv import CsvFile  # noqa: E402

DEFAULT_CSV = REPO_ROOT / "data" / "fashion-mnist" / "train.csv"


def dltrain_load(path: Path, cache: Path | None):
    table = CsvFile.open(path)
    target = "label" if "label" in table.header else table.header[-1]
    request = {"numeric": [name for name in table.header if name != target], "wide": [target]}
    return datacache.read_columns(table, request, cache)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    if not args.csv.is_file():
        print(f"{args.csv} not found: run `python bench/prepare_fashion_mnist.py` first.", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="dltrain-cache-bench-"))
    first_folder = Path(tempfile.mkdtemp(prefix="dltrain-cache-first-"))
    slow_hash_folder = Path(tempfile.mkdtemp(prefix="dltrain-cache-rehash-"))
    try:
        dltrain_load(args.csv, folder)  # warm the page cache and write the entry the cached rows use
        dltrain_load(args.csv, slow_hash_folder)
        racy = datacache._RACY_SECONDS

        def first_fit():
            shutil.rmtree(first_folder, ignore_errors=True)
            dltrain_load(args.csv, first_folder)

        def rehashed():
            datacache._RACY_SECONDS = float("inf")  # never trust the stat: hash the file again
            try:
                dltrain_load(args.csv, slow_hash_folder)
            finally:
                datacache._RACY_SECONDS = racy

        methods = {
            "numpy.loadtxt float32": lambda: np.loadtxt(args.csv, delimiter=",", skiprows=1, dtype=np.float32),
            "numpy.loadtxt int32": lambda: np.loadtxt(args.csv, delimiter=",", skiprows=1, dtype=np.int32),
            "dltrain parse": lambda: dltrain_load(args.csv, None),
            "dltrain first fit": first_fit,
            "dltrain cached fit": lambda: dltrain_load(args.csv, folder),
            "dltrain cached, rehashed": rehashed,
        }
        times = {name: [] for name in methods}
        for _ in range(args.runs):
            for name, method in methods.items():
                gc.collect()
                start = time.perf_counter()
                method()
                times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(values) for name, values in times.items()}

        columns = dltrain_load(args.csv, None)
        matrix_bytes = columns.matrix.nbytes
        shape = columns.matrix.shape
        del columns
        peaks = {}
        for name, cache in (("dltrain parse", None), ("dltrain cached fit", folder)):
            gc.collect()
            tracemalloc.start()
            columns = dltrain_load(args.csv, cache)
            peaks[name] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            del columns
    finally:
        for path in (folder, first_folder, slow_hash_folder):
            shutil.rmtree(path, ignore_errors=True)

    print(
        f"{args.csv}: {shape[0]} rows x {shape[1]} features; float32 matrix {matrix_bytes / 1e6:.1f} MB; "
        f"median of {args.runs} runs"
    )
    print("| method | seconds | vs dltrain parse | peak memory |")
    print("|---|---:|---:|---:|")
    for name, seconds in medians.items():
        peak = f"{peaks[name] / 1e6:.0f} MB = {peaks[name] / matrix_bytes:.2f}× matrix" if name in peaks else ""
        print(f"| {name} | {seconds:.3f} | {medians['dltrain parse'] / seconds:.1f}× | {peak} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
