"""The exported graph against ``dltrain predict``, before anything is written: verification rows
made from the stored schema, hostile rows at the edges (each alone), and onnxruntime's answers
compared with predict's."""

from __future__ import annotations

import csv
import math
import tempfile
from pathlib import Path

import numpy as np

from ...api import load
from ...data import BOOLEAN_WORDS, DataSchema
from ...data.cells import numeric_markers
from ...errors import ArtifactError, DltrainError
from ..predict import predict_rows
from .graph import onnx_modules
from .outputs import invalid_label

PROBABILITY_TOLERANCE = 1e-5  # absolute, on probabilities in [0, 1]
VALUE_TOLERANCE = 1e-5  # relative (and absolute near zero), on regression predictions


class ExportMismatch(DltrainError):
    """The exported graph disagrees with ``dltrain predict``; nothing is written (exit code 1)."""

    exit_code = 1


# ---------------------------------------------------------------- verification

# A number far beyond any training data that still fits float32 once scaled: the graph must
# answer as predict does beside it (its boolean check once overflowed to NaN on 1e20).
HUGE = 1e20
# A number that fits float32 but passes its range once scaled (where training's spread is
# below 1), or makes the network overflow: a row predict refuses.
OVERFLOWING = 3.0e38


def _number_text(value: float, decimal: str) -> str:
    text = repr(float(value))
    return text.replace(".", ",") if decimal == "," else text


def _unseen(categories: list) -> str:
    unseen = "unseen"
    while unseen in categories:
        unseen += "_"
    return unseen


def _missing_spellings(schema: DataSchema, column) -> list:
    """The cells predict reads as missing in ``column``: empty, each token, and for a numeric
    column each marker that is a number in another spelling (-999.0 for "-999")."""
    tokens = ["", *schema.missing_tokens(column.name)]
    if column.type == "numeric":
        tokens += [_number_text(marker, schema.decimal) for marker in numeric_markers(tokens)]
    return list(dict.fromkeys(tokens))


def verification_rows(schema: DataSchema, seed: int = 0) -> dict:
    """CSV cells that exercise every stored preprocessing step, all of which predict accepts:
    {column: [cell text]}.

    Made from the manifest alone (no training CSV needed): numbers spread over the training
    statistics, every category, true and false for booleans, and, wherever a column has a
    fill, missing cells in staggered rows: empty, then each of its missing-value tokens in turn."""
    columns = schema.columns
    widest = max([len(column.categories) for column in columns if column.type == "categorical"] + [0])
    tokens = {column.name: _missing_spellings(schema, column) for column in columns}
    filled = [len(tokens[column.name]) for column in columns if column.fill is not None and len(columns) > 1]
    n_rows = max(16, widest + 2, 4 * max(filled + [0]))
    rng = np.random.default_rng(seed)
    starts = np.cumsum([0] + [column.width for column in columns])
    cells = {}
    for index, column in enumerate(columns):
        if column.type == "numeric":
            offset, divisor = float(schema.offset[starts[index]]), float(schema.divisor[starts[index]])
            if schema.scale == "none" and isinstance(column.fill, (int, float)):
                offset = float(column.fill)
            spread = rng.normal(0.0, 1.5, n_rows) if schema.scale != "minmax" else rng.uniform(-0.2, 1.2, n_rows)
            numbers = (offset + divisor * spread).astype(np.float32)
            column_cells = [_number_text(value, schema.decimal) for value in numbers]
        elif column.type == "boolean":
            column_cells = [("false", "true")[row % 2] for row in range(n_rows)]
        else:
            categories = list(column.categories)
            column_cells = [categories[(row + index) % len(categories)] for row in range(n_rows)]
            if column.unknown == "ignore":
                column_cells[n_rows - 1] = _unseen(categories)
        # Missing cells in rows staggered by column, so no line is all missing (and a
        # one-column file keeps its cells); each column meets every token.
        if column.fill is not None and len(columns) > 1:
            missing_rows = [row for row in range(n_rows) if (row + index) % 4 == 1]
            for count, row in enumerate(missing_rows):
                column_cells[row] = tokens[column.name][count % len(tokens[column.name])]
        cells[column.name] = column_cells
    return cells


def hostile_rows(schema: DataSchema) -> list[tuple[str, dict]]:
    """Single rows at the edges, each checked alone against predict, which may refuse it: then
    the graph must mark it refused. [(what the row holds, {column: cell text})]"""
    columns = schema.columns
    starts = np.cumsum([0] + [column.width for column in columns])

    def row(numbers: float | None = None, boolean: str = "true", **changed) -> dict:
        cells = {}
        for index, column in enumerate(columns):
            if column.type == "numeric":
                value = float(schema.offset[starts[index]]) if numbers is None else numbers
                cells[column.name] = _number_text(value, schema.decimal)
            elif column.type == "boolean":
                cells[column.name] = boolean
            else:
                cells[column.name] = column.categories[0]
        cells.update(changed)
        return cells

    rows = []
    if any(column.type == "numeric" for column in columns):
        rows.append((f"every number {HUGE:g}", row(HUGE)))
        rows.append((f"every number {-HUGE:g}", row(-HUGE, "false")))
        rows.append((f"every number {OVERFLOWING:g}", row(OVERFLOWING)))
    unfilled = next((column for column in columns if column.fill is None), None)
    if unfilled is not None:
        rows.append((f"{unfilled.name} missing (N/A) without a fill", row(**{unfilled.name: "N/A"})))
    strict = next((column for column in columns if column.type == "categorical" and column.unknown == "error"), None)
    if strict is not None:
        unseen = _unseen(list(strict.categories))
        rows.append((f"{strict.name} unseen under unknown: error", row(**{strict.name: unseen})))
    return rows


def onnx_inputs(schema: DataSchema, cells: dict, input_form: str, decimal: str | None = None) -> dict:
    """The feed for an onnxruntime session of an exported model, from CSV cells (stripped), as
    the README's snippet builds it: a column's missing-value tokens become NaN in float inputs
    (the graph maps them in string inputs itself), boolean words 1.0 and 0.0, ``decimal``
    (default: the model's) the decimal mark."""
    decimal = schema.decimal if decimal is None else decimal

    def number(cell: str, missing: set) -> float:
        if cell in missing:
            return math.nan
        word = BOOLEAN_WORDS.get(cell.lower())
        return float(word) if word is not None else float(cell.replace(decimal, "."))

    columns = {}
    for column in schema.columns:
        values = cells[column.name]
        if column.type == "categorical":
            columns[column.name] = np.array(values, dtype=object).reshape(-1, 1)
        else:
            missing = set(schema.missing_tokens(column.name))
            numbers = [number(value, missing) for value in values]
            columns[column.name] = np.array(numbers, dtype=np.float32).reshape(-1, 1)
    if input_form == "features":
        return {"features": np.column_stack([columns[name] for name in schema.feature_names])}
    return columns


def _predict_with_dltrain(run_dir: Path, schema: DataSchema, cells: dict, path: Path):
    """``dltrain predict``'s header and rows for the cells, via a CSV like a user's."""
    delimiter = schema.delimiter or (";" if schema.decimal == "," else ",")
    n_rows = len(next(iter(cells.values())))
    with open(path, "w", encoding=schema.encoding, newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(schema.feature_names)
        for row in range(n_rows):
            writer.writerow([cells[name][row] for name in schema.feature_names])
    return predict_rows(run_dir, path, dialect={"delimiter": delimiter, "encoding": schema.encoding})


def _describe_row(schema: DataSchema, cells: dict, row: int) -> str:
    shown = [f"{name}={cells[name][row]!r}" for name in schema.feature_names[:6]]
    return ", ".join(shown) + (" …" if len(schema.feature_names) > 6 else "")


def _difference(schema: DataSchema, outputs: dict, row: int, expected: list | None) -> str | None:
    """How the graph's row differs from predict's (``expected`` None: predict refused it), or None."""
    if expected is None:
        values = outputs["prediction" if schema.task == "regression" else "probabilities"][row]
        label_ok = schema.task == "regression" or str(outputs["label"][row]) == str(invalid_label(schema.class_labels))
        if np.all(np.isnan(values)) and label_ok:
            return None
        shown = values.tolist() if schema.task == "regression" else [str(outputs["label"][row]), values.tolist()]
        return f"{shown} where dltrain predict refuses the row (the graph must give NaN and the invalid label)"
    if schema.task == "regression":
        want = np.array([float(value) for value in expected])
        got = outputs["prediction"][row].astype(np.float64)
        if not np.allclose(got, want, rtol=VALUE_TOLERANCE, atol=VALUE_TOLERANCE):
            return f"prediction {got.tolist()} against dltrain predict's {want.tolist()}"
        return None
    want = np.array([float(value) for value in expected[1:]])
    got = outputs["probabilities"][row].astype(np.float64)
    label = str(outputs["label"][row])
    if not np.allclose(got, want, rtol=0, atol=PROBABILITY_TOLERANCE):
        return f"probabilities {got.tolist()} against dltrain predict's {want.tolist()}"
    if label != expected[0] and not _near_tie(want):
        return f"label {label!r} against dltrain predict's {expected[0]!r}"
    return None


def verify(run, model_bytes: bytes, input_form: str) -> int:
    """Run the exported graph and ``dltrain predict`` on the verification rows and the hostile
    rows (each alone); ExportMismatch if they differ. Returns the number of rows compared."""
    _, onnxruntime = onnx_modules()
    schema = run.schema
    cells = verification_rows(schema)
    hostile = hostile_rows(schema)
    n_rows = len(next(iter(cells.values())))
    every = {name: cells[name] + [row[name] for _, row in hostile] for name in schema.feature_names}
    try:
        session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        results = session.run(None, onnx_inputs(schema, every, input_form))
    except Exception as error:  # onnxruntime raises its own exception types for a model it cannot run
        raise DltrainError(
            f"{run.run_dir}: onnxruntime {onnxruntime.__version__} cannot run the exported model "
            f"({str(error).splitlines()[0]}); nothing was written. Give a lower --opset (or none), "
            "or upgrade onnxruntime"
        ) from None
    outputs = dict(zip([output.name for output in session.get_outputs()], results))
    expected: list = []
    with tempfile.TemporaryDirectory(prefix="dltrain-export-") as folder:
        _, rows = _predict_with_dltrain(run.run_dir, schema, cells, Path(folder) / "verification.csv")
        if len(rows) != n_rows:
            raise ExportMismatch(
                f"{run.run_dir}: dltrain predict gave {len(rows)} rows for {n_rows} verification rows; "
                "nothing was written. This is a dltrain bug; please report it"
            )
        expected.extend(rows)
        for position, (_, row) in enumerate(hostile):
            try:
                _, rows = _predict_with_dltrain(
                    run.run_dir, schema, {name: [cell] for name, cell in row.items()}, Path(folder) / f"{position}.csv"
                )
                expected.append(rows[0])
            except DltrainError:
                expected.append(None)  # predict refuses the row
    for row, wanted in enumerate(expected):
        problem = _difference(schema, outputs, row, wanted)
        if problem:
            if load(run.run_dir, device="cpu").manifest["model_sha256"] != run.manifest["model_sha256"]:
                raise ArtifactError(
                    f"{run.run_dir}: the run was replaced while it was being exported (a fit "
                    "--force?); nothing was written; run dltrain export again"
                )
            what = f"row {row}" if row < n_rows else f"row {row} ({hostile[row - n_rows][0]})"
            raise ExportMismatch(
                f"{run.run_dir}: the exported graph disagrees with dltrain predict on verification "
                f"{what} ({_describe_row(schema, every, row)}): {problem}; nothing was written. "
                "This is a dltrain bug; please report it"
            )
    return len(expected)


def _near_tie(probabilities: np.ndarray) -> bool:
    """The two largest probabilities (or p and 0.5) too close for a label to be decided reliably."""
    top = np.sort(probabilities)[-2:]
    return len(top) == 2 and top[1] - top[0] <= 2 * PROBABILITY_TOLERANCE
