"""Cost per cell of a wide CSV against a narrow one of the same number of cells.

    python bench/wide_csv.py [--runs 5] [--cells 10000000] [--wide 100000] [--narrow 100]

Generates two integer CSVs with the same number of cells (narrow: --narrow columns, wide:
--wide columns) in a temporary folder, then times, interleaved and as medians of --runs:
  parse   CsvFile.open + read of every column (the reader alone)
  check   check.check: reading, column typing, missing-value checks, scaling, model build
and prints nanoseconds per cell and the wide/narrow ratio. Column handling was quadratic
(list.index per column) before issue 10: 20,000 columns took 19-45 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dltrain.commands import check  # noqa: E402
from dltrain.data.csv import CsvFile  # noqa: E402


def write(folder: Path, name: str, n_columns: int, n_rows: int) -> Path:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 100, size=(n_rows, n_columns))
    labels = rng.integers(0, 2, size=n_rows)
    path = folder / f"{name}.csv"
    with path.open("w") as handle:
        handle.write(",".join(f"c{index}" for index in range(n_columns)) + ",label\n")
        for row, label in zip(values.tolist(), labels.tolist()):
            handle.write(",".join(map(str, row)) + f",{label}\n")
    config = folder / f"{name}.yaml"
    config.write_text(
        f"name: {name}\ndata: {{train: {path.name}, target: label, cache: false}}\n"
        "model: {layers: [{units: 2}]}\ntrain: {epochs: 1}\n"
    )
    return config


def parse(config: Path):
    table = CsvFile.open(config.with_suffix(".csv"))
    table.read(numeric=[name for name in table.header if name != "label"], wide=["label"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cells", type=int, default=10_000_000)
    parser.add_argument("--wide", type=int, default=100_000)
    parser.add_argument("--narrow", type=int, default=100)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        files = {
            "narrow": write(Path(folder), "narrow", options.narrow, options.cells // options.narrow),
            "wide": write(Path(folder), "wide", options.wide, options.cells // options.wide),
        }
        steps = {"parse": parse, "check": check.check}
        times = {(step, kind): [] for step in steps for kind in files}
        for function in steps.values():  # warm-up
            for config in files.values():
                function(config)
        for _ in range(options.runs):
            for step, function in steps.items():
                for kind, config in files.items():
                    start = time.perf_counter()
                    function(config)
                    times[(step, kind)].append(time.perf_counter() - start)
    print(
        f"{options.cells:,} cells: narrow {options.narrow:,} columns x {options.cells // options.narrow:,} rows, "
        f"wide {options.wide:,} columns x {options.cells // options.wide:,} rows; median of {options.runs}"
    )
    for step in steps:
        narrow = statistics.median(times[(step, "narrow")]) / options.cells * 1e9
        wide = statistics.median(times[(step, "wide")]) / options.cells * 1e9
        print(f"{step:6s} narrow {narrow:6.1f} ns/cell   wide {wide:6.1f} ns/cell   wide/narrow {wide / narrow:.2f}")


if __name__ == "__main__":
    main()
