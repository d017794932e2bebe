"""Model-ready arrays, the train/validation split and the K folds of cross-validation (both stratified by class)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .store import write_array

CHUNK_ROWS = 1 << 16  # rows a split gives at a time (metrics.EVAL_ROWS: a multiple of 4096)


@dataclass
class Split:
    """Model-ready arrays for one part of the data."""

    features: np.ndarray
    targets: np.ndarray
    stored = False

    def __len__(self):
        return self.features.shape[0]

    def chunks(self, size: int = CHUNK_ROWS):
        """(features, targets) of consecutive rows, ``size`` at a time (views)."""
        for begin in range(0, len(self), size):
            yield self.features[begin : begin + size], self.targets[begin : begin + size]

    def target_chunks(self, size: int = CHUNK_ROWS):
        for begin in range(0, len(self), size):
            yield self.targets[begin : begin + size]


@dataclass
class StoredSplit:
    """One part of the data left where it lies (the on-disk store, store.py): rows of a table,
    encoded as model inputs and targets a chunk at a time with the fitted ``schema`` (a
    DataSchema). What is encoded equals the same rows of an in-memory Split."""

    columns: Any  # parsed.Columns
    rows: np.ndarray  # the table's rows in this split, ascending
    schema: Any
    stored = True

    def __len__(self):
        return len(self.rows)

    def chunks(self, size: int = CHUNK_ROWS):
        for begin in range(0, len(self), size):
            rows = self.rows[begin : begin + size]
            yield self.schema.encode_features(self.columns, rows), self.schema.encode_target(self.columns, rows)

    def target_chunks(self, size: int = CHUNK_ROWS):
        for begin in range(0, len(self), size):
            yield self.schema.encode_target(self.columns, self.rows[begin : begin + size])

    def in_memory(self) -> Split:
        """The split's model inputs and targets encoded whole into memory (for small data)."""
        return Split(
            self.schema.encode_features(self.columns, self.rows), self.schema.encode_target(self.columns, self.rows)
        )

    def encoded(self, path: Path) -> Split:
        """The split's model inputs and targets encoded once, a chunk at a time, into the .npy
        file ``path`` and one beside it, and mapped from them (the page cache keeps them while
        they fit; the process holds no array of the split's size): batches are then gathered as
        from arrays in memory, the same rows in the same order."""
        blocks = (self.schema.encode_features(self.columns, rows) for rows in self._row_chunks())
        features = write_array(path, blocks, np.float32, (self.schema.n_inputs,))
        chunks = self.target_chunks()
        first = next(chunks)  # its type and shape: class indices, a 0/1 column, or values
        targets = write_array(
            path.with_name(f"{path.stem}-targets.npy"), itertools.chain([first], chunks), first.dtype, first.shape[1:]
        )
        return Split(features, targets)

    def _row_chunks(self):
        for begin in range(0, len(self), CHUNK_ROWS):
            yield self.rows[begin : begin + CHUNK_ROWS]


class EncodedSplit:
    """A StoredSplit whose model inputs are encoded into a file (``StoredSplit.encoded``, by
    ``encode``) when first asked for: training and scoring read them, `dltrain check` never does."""

    stored = False

    def __init__(self, split: StoredSplit, encode):
        self._encode, self._rows = encode, len(split)
        self._encoded: Split | None = None

    def __len__(self):
        return self._rows

    def _ready(self) -> Split:
        if self._encoded is None:
            self._encoded = self._encode()
            self._encode = None  # the row numbers it holds are no longer needed
        return self._encoded

    @property
    def features(self) -> np.ndarray:
        return self._ready().features

    @property
    def targets(self) -> np.ndarray:
        return self._ready().targets

    def chunks(self, size: int = CHUNK_ROWS):
        return self._ready().chunks(size)

    def target_chunks(self, size: int = CHUNK_ROWS):
        return self._ready().target_chunks(size)


def stratified_split(raw_labels: np.ndarray | None, n_rows: int, fraction: float, rng):
    """Indices (train, validation); classes keep their proportions when labels are given."""
    index_type = np.int32 if n_rows < 2**31 else np.int64  # the same draws in either type, half the memory
    if fraction == 0:
        return np.arange(n_rows, dtype=index_type), np.arange(0, dtype=index_type)
    if raw_labels is None:
        order = np.arange(n_rows, dtype=index_type)
        rng.shuffle(order)  # what rng.permutation(n_rows) draws
        n_validation = max(1, int(round(fraction * n_rows)))
        return np.sort(order[n_validation:]), np.sort(order[:n_validation])
    per_class = []
    for label in np.unique(raw_labels):
        members = _where(raw_labels == label, index_type)
        rng.shuffle(members)  # what rng.permutation(members) draws, without its copy
        per_class.append(members[: int(round(fraction * members.size))].copy())  # not a view keeping every row
        del members
    validation = np.sort(np.concatenate(per_class))
    del per_class
    return _others(validation, n_rows, index_type), validation


def class_counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """How many rows of each class ``labels`` (class indices) holds, counted a block at a time
    (np.unique would sort a copy of them all; np.bincount would widen them all to 8 bytes)."""
    counts = np.zeros(n_classes, dtype=np.int64)
    for begin in range(0, len(labels), CHUNK_ROWS * 16):
        counts += np.bincount(labels[begin : begin + CHUNK_ROWS * 16], minlength=n_classes)
    return counts


def _others(rows: np.ndarray, n_rows: int, index_type) -> np.ndarray:
    """The numbers below ``n_rows`` not in ``rows`` (sorted, distinct), ascending."""

    def block_mask(begin: int, stop: int) -> np.ndarray:
        mask = np.ones(stop - begin, dtype=bool)
        mask[rows[np.searchsorted(rows, begin) : np.searchsorted(rows, stop)] - begin] = False
        return mask

    return _found(block_mask, n_rows, n_rows - len(rows), index_type)


def _where(mask: np.ndarray, index_type) -> np.ndarray:
    """``np.flatnonzero(mask)`` in ``index_type``."""
    return _found(lambda begin, stop: mask[begin:stop], len(mask), int(np.count_nonzero(mask)), index_type)


def _found(block_mask, n_rows: int, count: int, index_type) -> np.ndarray:
    """The ``count`` rows below ``n_rows`` where ``block_mask(begin, stop)`` is true, ascending,
    in ``index_type``: a block of rows at a time, never a mask of every row nor their numbers in
    the 8 bytes np.flatnonzero gives."""
    found = np.empty(count, dtype=index_type)
    at, block = 0, CHUNK_ROWS * 16
    for begin in range(0, n_rows, block):
        hits = np.flatnonzero(block_mask(begin, min(begin + block, n_rows)))
        found[at : at + len(hits)] = hits
        found[at : at + len(hits)] += begin
        at += len(hits)
    return found


def stratified_folds(raw_labels: np.ndarray | None, n_rows: int, k: int, rng) -> list:
    """K (train, held-out) index pairs; every row is held out once. With labels, each class is
    dealt across the folds in turn, so every fold holds its share of each class (sizes differ by
    at most one row)."""
    if raw_labels is None:
        order = rng.permutation(n_rows)
    else:
        order = np.concatenate(
            [rng.permutation(np.flatnonzero(raw_labels == label)) for label in np.unique(raw_labels)]
        )
    fold_of = np.empty(n_rows, dtype=np.intp)
    fold_of[order] = np.arange(n_rows) % k
    return [(np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)) for fold in range(k)]
