"""`dltrain predict`: one output row per input row, as CSV text."""

import csv
import io
import os
from pathlib import Path

import numpy as np

from ..artifacts import holds_run
from ..data import DataSchema, read_features
from ..errors import ArtifactError, ConfigError
from ..metrics import predicted_classes
from .common import _check_argument_order, csv_dialect, load_run


def format_number(value) -> str:
    """The shortest text that reads back as the same float32, the model's precision: 0.5,
    151.25, 2.55662e-11. One format for predicted values and probabilities alike."""
    single = np.float32(value)
    if single == 0 or 1e-4 <= abs(single) < 1e16 or not np.isfinite(single):
        return np.format_float_positional(single, unique=True, trim="-")
    return np.format_float_scientific(single, unique=True, trim="-")


def _kept_columns(data_path, schema: DataSchema, keep, dialect: dict) -> list[np.ndarray]:
    """The ``--keep`` columns of the CSV, as written, to pass through beside the predictions."""
    if not keep:
        return []
    table = schema.open(data_path, dialect)
    for name in keep:
        table.index(name, "--keep")
    columns = table.read(text=list(keep))
    return [columns.text[name] for name in keep]


def predict_rows(run_dir, data_path, keep=(), dialect: dict | None = None) -> tuple[list[str], list[list]]:
    """Header and rows of predictions: the ``keep`` columns as given, then the target's predicted
    label or value, then prob_<label> per class. ``dialect``: see ``csv_dialect`` (default: detected)."""
    dialect = dialect or csv_dialect()
    _check_argument_order("predict", run_dir, data_path)
    run = load_run(run_dir)
    schema = run.schema
    keep = list(dict.fromkeys(keep))
    kept = _kept_columns(data_path, schema, keep, dialect)
    features, _ = read_features(data_path, schema, with_target=False, dialect=dialect)
    outputs = run.model.predict(features)
    if schema.task == "regression":  # one column per target
        values = schema.unscale_targets(outputs.astype(np.float64))
        header, rows = list(schema.targets), [[format_number(value) for value in row] for row in values.tolist()]
    else:
        probabilities = np.column_stack([1.0 - outputs[:, 0], outputs[:, 0]]) if schema.binary else outputs
        labels = np.asarray(schema.class_labels, dtype=object)[predicted_classes(outputs)]
        header = [schema.target] + [f"prob_{label}" for label in schema.class_labels]
        rows = [[label] + [format_number(p) for p in row] for label, row in zip(labels, probabilities.tolist())]
    clashes = [name for name in keep if name in header]
    if clashes:
        raise ConfigError(
            f"--keep {clashes[0]}: the predictions have a column of that name already; "
            f"keep other columns, or rename {clashes[0]!r} in a copy of the CSV"
        )
    if kept:
        header = keep + header
        rows = [[column[index] for column in kept] + row for index, row in enumerate(rows)]
    return header, rows


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
