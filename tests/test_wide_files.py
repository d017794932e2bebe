"""Column handling is linear in the number of columns.

20,000 columns used to take 19-45 s (list.index per column, quadratic); this guard compares files
of 2,500 and 20,000 columns over the same rows, measured in turns in one process."""

import time

import numpy as np

from conftest import bounded
from dltrain.commands import check
from dltrain.data.csv import CsvFile


def _write(path, n_columns, n_rows, seed=0):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 100, size=(n_rows, n_columns))
    labels = rng.integers(0, 2, size=n_rows)
    lines = [",".join(f"c{index}" for index in range(n_columns)) + ",label"]
    lines += [",".join(map(str, row)) + f",{label}" for row, label in zip(values.tolist(), labels.tolist())]
    path.write_text("\n".join(lines) + "\n")
    config = path.with_suffix(".yaml")
    config.write_text(
        f"name: wide\ndata: {{train: {path.name}, target: label, cache: false}}\n"
        "model: {layers: [{units: 2}]}\ntrain: {epochs: 1}\n"
    )
    return config


def _best_seconds(configs, repeats=5):
    """The least CPU time of ``repeats`` checks of each config, taken in turns: CPU time, not the
    clock, as the clock counts whatever else the machine runs meanwhile (other tests on the
    other core)."""
    best = [float("inf")] * len(configs)
    for _ in range(repeats):
        for index, config in enumerate(configs):
            start = time.process_time()
            check.check(config)
            best[index] = min(best[index], time.process_time() - start)
    return best


def test_eight_times_the_columns_cost_about_eight_times_as_much(tmp_path):
    rows = 40
    small = _write(tmp_path / "small.csv", 2_500, rows)
    wide = _write(tmp_path / "wide.csv", 20_000, rows)
    with bounded(seconds=120):
        _best_seconds([small], repeats=1)  # warm-up: imports, BLAS threads
        small_cost, wide_cost = _best_seconds([small, wide])
    # Linear handling measures at most 8x (less: the check's fixed cost is shared); the quadratic
    # handling (list.index per column, 19-45 s for 20,000 columns) measured 64x and more. 32x
    # leaves room for a machine busy enough to slow one file's caches (19.8x seen once) and still
    # fails the quadratic one.
    assert wide_cost < 32 * small_cost, f"{wide_cost:.3f} s for 20,000 columns, {small_cost:.3f} s for 2,500"


def test_a_one_line_file_of_a_million_columns_is_answered(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text(",".join(f"c{index}" for index in range(1_200_000)))
    with bounded(seconds=60):
        table = CsvFile.open(path)
        assert len(table.header) == 1_200_000
        assert table.index("c1199999") == 1_199_999
