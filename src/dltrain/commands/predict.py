"""`dltrain predict`: one output row per input row, as CSV text, with the ``--keep`` columns.

The predictions themselves come from ``predictions`` (the pipeline ``Run.predict`` and
`dltrain serve` share); this module adds the kept columns and writes the text, a block of rows
at a time (``write_predictions``): to stdout as it is made, or to an --out file that appears
whole or not at all (``OutputFile``)."""

import contextlib
import csv
import io
import os
from pathlib import Path

import numpy as np

from ..api import Run, csv_dialect, file_dialect, load
from ..artifacts import holds_run
from ..data import DataSchema
from ..data.chunks import ChunkStream, read_in_chunks, text_chunks
from ..errors import ArtifactError, ConfigError
from ..files import atomic_file, make_parent_folders, write_all
from ..predictions import predict_chunk, predict_csv, prediction_header
from .arguments import check_argument_order


def _kept_columns(data_path, schema: DataSchema, keep, dialect: dict, content: bytes | None) -> list[np.ndarray]:
    """The ``--keep`` columns of the CSV, as written, to pass through beside the predictions."""
    if not keep:
        return []
    table = schema.open(data_path, dialect, content)
    table.keep_empty_rows = True  # the rows predict keeps: one kept cell per prediction
    for name in keep:
        table.index(name, "--keep")
    columns = table.read(text=list(keep))
    return [columns.text[name] for name in keep]


PREDICTED_PREFIX = "predicted_"


def _prediction_names(header: list, keep: list) -> list:
    """The prediction columns' names: as the target (and prob_<label>), or ``predicted_<name>``
    where a kept column has that name (``--keep species``: the truth beside the prediction)."""
    renamed = [PREDICTED_PREFIX + name if name in keep else name for name in header]
    clashes = [name for name in renamed if name in keep]
    if clashes:
        raise ConfigError(
            f"--keep {clashes[0]}: the predictions have a column of that name already; "
            f"keep other columns, or rename {clashes[0]!r} in a copy of the CSV"
        )
    return renamed


def predict_rows(
    run_dir, data_path, keep=(), dialect: dict | None = None, on_note=None, device: str | None = None
) -> tuple[list[str], list[list]]:
    """Header and rows of predictions: the ``keep`` columns as given, then the target's predicted
    label or value, then prob_<label> per class; a prediction column named like a kept one is
    ``predicted_<name>``. ``dialect``: see ``csv_dialect`` (default: detected), and ``file_dialect``
    for the encoding's fallback, which ``on_note`` is told of."""
    check_argument_order("predict", run_dir, data_path)
    run = load(run_dir, device)
    dialect = file_dialect(run.schema, data_path, dialect or csv_dialect(), on_note)
    return predict_table(run, data_path, keep, dialect)


def predict_table(
    run: Run, data_path, keep=(), dialect: dict | None = None, content: bytes | None = None
) -> tuple[list[str], list[list]]:
    """``predict_rows`` for a loaded run; with ``content`` (a request's body) those bytes are the CSV."""
    dialect = dialect or csv_dialect()
    schema = run.schema
    keep = list(dict.fromkeys(keep))
    kept = _kept_columns(data_path, schema, keep, dialect, content)
    predictions = predict_csv(run, data_path, dialect, content)
    header, rows = list(predictions.header), predictions.text_rows()
    if kept:
        header = keep + _prediction_names(header, keep)
        rows = [[column[index] for column in kept] + row for index, row in enumerate(rows)]
    return header, rows


# Rows per block of output text: a multiple of the engine's prediction batch (4096 rows), so each
# row's outputs are computed in the same batch as when the whole file is predicted at once.
BLOCK_ROWS = 32768


def write_predictions(
    run_dir,
    data_path,
    write,
    keep=(),
    dialect: dict | None = None,
    on_note=None,
    device: str | None = None,
    encoding: str = "utf-8",
) -> int:
    """``predict_rows`` as CSV text, read, predicted and handed to ``write`` (bytes in
    ``encoding``) a block of rows at a time: the header with the first block, then each block as
    soon as it is made. The bytes are those of ``predictions_csv``. Returns the number of rows."""
    check_argument_order("predict", run_dir, data_path)
    run = load(run_dir, device)
    schema = run.schema
    dialect = file_dialect(schema, data_path, dialect or csv_dialect(), on_note)
    keep = list(dict.fromkeys(keep))
    table = schema.open(data_path, dialect)
    table.keep_empty_rows = True  # one output row per input row
    request = schema.column_request(table, with_target=False)
    kept = _kept_chunks(data_path, schema, keep, dialect)
    header = keep + _prediction_names(prediction_header(schema), keep) if keep else prediction_header(schema)
    pending = [predictions_csv(header, []).encode(encoding)]  # the header, written with the first block

    def take(columns) -> None:
        text_columns = _kept_cells(next(kept), columns.lines, keep) if keep else []
        pending.append(predict_chunk(run, columns).csv_text(schema.class_labels, text_columns, encoding))
        write(b"".join(pending))
        pending.clear()

    stream = ChunkStream(BLOCK_ROWS, take)
    read_in_chunks(table, request, stream)
    return stream.given


def _kept_chunks(data_path, schema: DataSchema, keep: list, dialect: dict):
    """The ``--keep`` columns as written, a block of rows at a time beside the predictions' (a
    second pass over the file: a kept column may be a numeric feature, read as numbers there)."""
    if not keep:
        return iter(())
    table = schema.open(data_path, dialect)
    table.keep_empty_rows = True
    for name in keep:  # before anything is read
        table.index(name, "--keep")
    return text_chunks(table, keep, BLOCK_ROWS)


def _kept_cells(columns, lines: np.ndarray, keep: list) -> list:
    """Each kept column of a block as (its distinct cells, each row's index among them)."""
    assert np.array_equal(columns.lines, lines), "the kept columns' rows are the predictions' rows"
    cells = []
    for name in keep:
        codes, words = columns.categories[name]
        used, indices = np.unique(codes, return_inverse=True)
        cells.append((words[used], indices.reshape(-1)))
    return cells


class OutputFile:
    """An --out file written a block at a time, that appears whole or not at all: the first
    block makes the missing folders and a temporary file beside it (files.atomic_file), which
    is renamed over it when the context ends without an error, and removed otherwise (an error,
    Ctrl-C; after a kill -9 only the temporary file, a dot file beside it, is left). A disk
    error is one DltrainError naming the file."""

    def __init__(self, path):
        self.path = Path(path)
        self._stack = contextlib.ExitStack()
        self._handle = None

    def write(self, data: bytes) -> None:
        if self._handle is None:
            make_parent_folders(self.path)
            self._handle = self._stack.enter_context(atomic_file(self.path))
        write_all(self._handle, data)  # an OSError reaches atomic_file, which names the file

    def __enter__(self) -> "OutputFile":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if self._handle is None and error is None:
            self.write(b"")  # no block came: an empty file, as before
        self._stack.__exit__(kind, error, traceback)


def predictions_csv(header, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def refuse_overwriting_inputs(out, inputs, run_dir):
    """An output file must not be one of the command's inputs, nor a file inside a run folder."""
    out = Path(out)
    for path in inputs:
        if out.exists() and Path(path).exists() and os.path.samefile(out, path):
            raise ArtifactError(
                f"--out {out} is the input {path}; writing there would replace the data. Give another file name"
            )
    parent = out.parent.resolve()
    if parent == Path(run_dir).resolve() or holds_run(parent):
        raise ArtifactError(
            f"--out {out} is inside a run folder ({out.parent}); writing there could break the run. "
            "Write the predictions elsewhere"
        )
