"""Where a fit's training data lives (``data.store``), how batches are shuffled there
(``data.shuffle``), and what it costs: the plan `dltrain check` prints.

In memory, the parsed columns and the model inputs made from them are arrays; from the store,
the parsed columns stay on disk (store.py: the page cache keeps what fits) and the model inputs
are made a chunk of rows at a time, so the memory a fit takes no longer grows with its rows but
for a few bytes a row (the split's row numbers, the epoch's order). ``auto`` keeps a file in memory while its
arrays would take at most STORE_ABOVE (and a quarter of the memory available), and shuffles
rows exactly while the store fits in half the available memory (else in blocks: see
batches.StoredBatches)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import human_bytes
from ..system import available_memory
from .csv import CsvFile
from .store import stored_bytes

STORE_ABOVE = 512 << 20  # bytes of training arrays in memory above which auto reads from the store
BASE_BYTES = 110 << 20  # Python, NumPy, numba and the engine, before any data (measured: a fit of a small file)
# Per row, with batches from the store: the split's row numbers and the epoch's order, 4 bytes
# each (the targets and model inputs are mapped from files) (bench/fit_memory.py: peak RssAnon
# 144 MB at 2,000,000 rows, 178 MB at 8,000,000 with the parse; this says 154 and 190).
ROW_BYTES_FROM_STORE = 6
_SAMPLE_BYTES = 1 << 20


@dataclass
class Placement:
    """The data's place, and what it costs."""

    rows: int  # data rows (estimated from the file's size until it is parsed)
    parsed_bytes: int  # the parsed columns (in memory, or the store's size on disk)
    memory_bytes: int  # the training arrays in memory: parsed columns and model inputs
    from_store: bool  # batches come from the on-disk store
    shuffle: str = "rows"  # rows | blocks
    reason: str = ""
    folder: Path | None = None  # the cache folder the store is in (model inputs are written beside it)
    available: int = 0  # bytes of memory available when it was placed

    def fits_in_memory(self) -> bool:
        """The parsed columns would take at most a quarter of the memory available."""
        return self.parsed_bytes <= self.available // 4

    def parsed(self, columns) -> None:
        """The exact rows and sizes, once the file is parsed (from the store: its size on disk,
        also where the columns were parsed into memory, as a check does)."""
        self.rows = columns.n_rows
        in_memory = isinstance(columns.matrix, np.ndarray)  # a store's is a StoreMatrix
        self.parsed_bytes = stored_bytes(columns) if self.from_store and in_memory else parsed_bytes(columns)

    def peak_memory(self, n_inputs: int, model_bytes: int, chunk_rows: int) -> int:
        """The memory a fit is expected to take at its peak (anonymous memory: the store's pages
        belong to the page cache)."""
        if not self.from_store:  # the parsed columns and, made from them, the model inputs
            self.memory_bytes = self.parsed_bytes + self.rows * max(n_inputs, 1) * 4
            return BASE_BYTES + self.memory_bytes + model_bytes
        chunk = chunk_rows * max(n_inputs, 1) * 4  # a chunk of inputs being encoded
        return BASE_BYTES + chunk + self.rows * ROW_BYTES_FROM_STORE + model_bytes

    def describe(self, peak_bytes: int) -> str:
        """One line for `dltrain check`: rows, where the data is and its size, peak memory, shuffle."""
        where = (
            f"batches from the on-disk store ({human_bytes(self.parsed_bytes)} on disk), shuffled by {self.shuffle}"
            if self.from_store
            else f"batches from memory ({human_bytes(self.memory_bytes)} of arrays)"
        )
        return (
            f"plan: {self.rows:,} rows; {where} [{self.reason}]; "
            f"expected peak memory of a fit about {human_bytes(peak_bytes)}"
        )


def row_bytes(request: dict) -> int:
    """Bytes per row of the parsed columns: float32 numbers, float64 targets, int32 codes, line numbers."""
    return 4 * len(request.get("numeric", ())) + 8 * len(request.get("wide", ())) + 4 * len(request.get("text", ())) + 8


def estimated_rows(table: CsvFile) -> int:
    """The file's rows, estimated from its size and the length of the lines near its start."""
    size = table.size()
    try:
        with table.open_bytes() as handle:
            sample = handle.read(_SAMPLE_BYTES)
    except Exception:  # noqa: BLE001 - an estimate; reading for real reports what is wrong
        return 0
    lines = max(sample.count(b"\n") - table.header_lines, 1)
    if len(sample) < _SAMPLE_BYTES:
        return lines
    return int(size / (len(sample) / (lines + table.header_lines)))


def place(setting, shuffle: str, table: CsvFile, request: dict) -> Placement:
    """Where the training data of ``table`` goes: ``setting`` is data.store (auto, true, false),
    ``shuffle`` data.shuffle (auto, rows, blocks)."""
    rows = estimated_rows(table)
    parsed = rows * row_bytes(request)
    memory = 2 * parsed  # the parsed columns and, made from them, the model inputs
    available = available_memory()
    if setting == "auto":
        limit = min(STORE_ABOVE, available // 4)
        from_store = memory > limit
        reason = f"auto: about {human_bytes(memory)} in memory, over {human_bytes(limit)}" if from_store else "auto"
    else:
        from_store = bool(setting)
        reason = f"data.store: {str(setting).lower()}"
    order = shuffle
    if shuffle == "auto":
        order = "rows" if not from_store or parsed <= available // 2 else "blocks"
    return Placement(rows, parsed, memory, from_store, order, reason, available=available)


def parsed_bytes(columns) -> int:
    """The bytes of a table's parsed columns (in memory, or in the store on disk)."""
    matrix = columns.matrix
    total = getattr(matrix, "nbytes", 0) or sum(
        getattr(part, "nbytes", 0) for part in (getattr(matrix, "values", None), getattr(matrix, "missing", None))
    )
    total += sum(values.nbytes for values in columns.wide.values()) + columns.lines.nbytes
    return total + sum(codes.nbytes for codes, _ in columns.categories.values())
