"""Predictions as CSV text: the fast path (Ryu's shortest digits, numba) writes exactly the bytes of
the reference path (NumPy's format_float_* per cell, csv.writer)."""

import numpy as np
import pytest

from dltrain import csv_text
from dltrain.csv_text import FieldTable, csv_rows, csv_rows_reference, format_number
from dltrain.engine import kernels


def _awkward_numbers(seed: int, random_count: int) -> np.ndarray:
    """Random bit patterns (every float32 is as likely as any other), and the edges: powers of two
    and of ten and their neighbours, the layout's bounds (1e-4, 1e16), subnormals, the extremes."""
    rng = np.random.default_rng(seed)
    edges = [np.ldexp(np.float32(1), np.arange(-149, 128)).astype(np.float32)]
    decimal = np.array([m * 10.0**e for e in range(-45, 39) for m in (1, 5, 9.999999, 4.9999995)])
    decimal = decimal[(decimal > 1e-45) & (decimal < 3.4e38)].astype(np.float32)
    edges += [decimal, np.nextafter(decimal, np.float32(0)), np.nextafter(decimal, np.float32(np.inf))]
    edges.append(np.float32([0.0, 1e-4, 1e16, 9.999999e-05, 9.999999e15, 3.4028235e38, 1e-45, 0.5, 1, 123456790]))
    values = np.concatenate([rng.integers(0, 2**32, random_count, dtype=np.uint64).astype(np.uint32).view(np.float32)])
    values = np.concatenate([values, *edges, -np.concatenate(edges), np.float32([np.inf, -np.inf, np.nan])])
    probabilities = rng.random(random_count // 4).astype(np.float32)
    return np.concatenate([values, probabilities, np.float32(1) - probabilities])


def _texts(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = data.tobytes()
    return [raw[offsets[index] : offsets[index + 1]].decode() for index in range(len(offsets) - 1)]


def test_shortest_digits_and_layout_are_numpys():
    """The kernels' own code, run by Python (no compilation): Ryu's digits laid out as NumPy does."""
    values = _awkward_numbers(seed=1, random_count=3000)
    bits = values.view(np.uint32).astype(np.int64)
    texts = _texts(*csv_text._format_numbers(bits, *csv_text._tables()))
    assert texts == [format_number(value) for value in values]


@pytest.mark.skipif(not kernels.ready(), reason="numba is not installed here")
def test_the_kernels_write_the_reference_bytes():
    values = _awkward_numbers(seed=2, random_count=20000)
    assert _texts(*csv_text.number_texts(values)) == [format_number(value) for value in values]
    # Rows: text fields that need quoting (a comma, a quote, a line break, a lone CR), empty ones,
    # non-ASCII, then two numbers per row.
    words = np.array(["setosa", "a,b", 'say "hi"', "two\nlines", "cr\rhere", "", "é ü", " pad "], dtype=object)
    labels = np.array(["no", "yes"], dtype=object)
    rng = np.random.default_rng(3)
    numbers = values[: 2 * 5000].reshape(5000, 2)
    columns = [(words, rng.integers(0, len(words), 5000)), (labels, rng.integers(0, 2, 5000))]
    expected = csv_rows_reference(columns, numbers, "utf-8")
    assert csv_rows([(FieldTable.of_words(w, "utf-8"), i) for w, i in columns], numbers) == expected
    assert csv_rows([], numbers) == csv_rows_reference([], numbers)  # regression: numbers only
    latin = [(np.array(["ça"], dtype=object), np.zeros(5000, dtype=np.int64))]
    assert csv_rows([(FieldTable.of_words(latin[0][0], "latin-1"), latin[0][1])], numbers) == csv_rows_reference(
        latin, numbers, "latin-1"
    )


@pytest.mark.skipif(not kernels.ready(), reason="numba is not installed")
def test_a_cold_kernel_cache_costs_no_compile_wait_until_compiling_pays(monkeypatch):
    """A fresh install: the blocks go by the reference path and one helper process compiles the
    kernels into the cache, until the numbers written so amount to a compile's cost."""

    class Still:  # a helper process still compiling
        def poll(self):
            return None

    started, by_kernels = [], []
    monkeypatch.setattr(csv_text, "_warm", lambda: False)
    monkeypatch.setattr(csv_text, "_helper", csv_text.kernel_cache.CompileHelper(csv_text._HELPER))
    monkeypatch.setattr(csv_text, "_written_cold", 0)
    monkeypatch.setattr(csv_text.kernel_cache, "start_helper", lambda code: started.append(code) or Still())
    monkeypatch.setattr(csv_text, "FAST_MIN_CELLS", 10)
    monkeypatch.setattr(csv_text, "COMPILE_PAYS_CELLS", 50)
    real_csv_rows = csv_text.csv_rows
    monkeypatch.setattr(csv_text, "csv_rows", lambda *args: by_kernels.append(True) or real_csv_rows(*args))
    numbers = np.random.default_rng(3).random((10, 3)).astype(np.float32)  # 30 numbers a block
    labels = (["a,b", "c"], np.arange(10) % 2)
    texts = [csv_text.rows_text([labels], numbers) for _ in range(3)]
    assert texts == [csv_rows_reference([labels], numbers)] * 3
    assert len(by_kernels) == 1  # 30, then 60 numbers by the reference path; the third block compiles
    assert started == [csv_text._HELPER]  # one helper, once
