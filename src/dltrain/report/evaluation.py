"""``dltrain eval``'s output: the metrics with the rows scored and skipped, per target or per
class with the confusion matrix, and the same as JSON."""

from __future__ import annotations

from rich.text import Text

from ..metrics import REGRESSION_METRICS, format_value
from .console import Table
from .tables import scalar_table

_ROW_COUNTS = ("rows_scored", "rows_skipped", "rows_skipped_empty_target", "skipped_lines")


def evaluation_json(metrics: dict, labels) -> dict:
    """``dltrain eval --json``: the metrics, the row counts, per target values, then per class
    scores keyed by label, the confusion matrix and the labels."""
    result = {name: value for name, value in metrics.items() if name not in ("per_class", "confusion_matrix")}
    per_class = metrics.get("per_class")
    if per_class is not None:
        for name, values in per_class.items():
            result[name] = {label: (int(v) if name == "support" else float(v)) for label, v in zip(labels, values)}
        result["confusion_matrix"] = metrics["confusion_matrix"].tolist()
        result["class_labels"] = list(labels)
    return result


def _skipped_text(metrics: dict) -> Text | None:
    skipped = metrics["rows_skipped"]
    if not skipped:
        return None
    empty_target = metrics["rows_skipped_empty_target"]
    why = (
        "an empty target"
        if empty_target == skipped
        else f"an empty cell under missing: drop ({empty_target} of them an empty target)"
        if empty_target
        else "an empty cell under missing: drop"
    )
    lines = metrics["skipped_lines"]
    shown = ", ".join(map(str, lines)) + (" …" if skipped > len(lines) else "")
    return Text(
        f"skipped {skipped} of {skipped + metrics['rows_scored']} rows with {why}, "
        f"as in training (missing: drop); line{'s' if skipped > 1 else ''} {shown}"
    )


def evaluation_report(metrics: dict, labels, title: str) -> list:
    """``dltrain eval``'s tables: the metrics with the rows scored and skipped, then per target
    (several regression targets) or per class with the confusion matrix."""
    scalars = {
        name: value
        for name, value in metrics.items()
        if name not in ("per_class", "confusion_matrix", "per_target", *_ROW_COUNTS)
    }
    per_target = metrics.get("per_target")
    caption = None
    if per_target:
        caption = f"{', '.join(REGRESSION_METRICS)}: the means over the {len(per_target)} targets (per target below)"
    table = scalar_table(scalars, title=title)
    table.caption = caption
    table.add_row("rows scored", str(metrics["rows_scored"]))
    table.add_row("rows skipped", str(metrics["rows_skipped"]))
    parts: list = [table]
    skipped = _skipped_text(metrics)
    if skipped is not None:
        parts.append(skipped)
    if per_target:
        parts.append(per_target_table(per_target))
    if metrics.get("per_class") is not None:
        parts.append(per_class_table(labels, metrics["per_class"]))
        parts.append(confusion_table(labels, metrics["confusion_matrix"]))
    return parts


def per_target_table(per_target: dict) -> Table:
    """Rows: regression targets, each in its own units; columns: mse, rmse, mae, r2."""
    table = Table(title="per target")
    table.add_column("target")
    for name in REGRESSION_METRICS:
        table.add_column(name, justify="right")
    for target, values in per_target.items():
        table.add_row(target, *(format_value(values[name]) for name in REGRESSION_METRICS))
    return table


def per_class_table(labels, per_class) -> Table:
    table = Table(title="per class")
    for column in ("class", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for index, label in enumerate(labels):
        table.add_row(
            label,
            *(format_value(float(per_class[name][index])) for name in ("precision", "recall", "f1")),
            str(int(per_class["support"][index])),
        )
    return table


def confusion_table(labels, matrix) -> Table:
    table = Table(title="confusion matrix")
    table.add_column("true \\ predicted")
    for label in labels:
        table.add_column(label, justify="right")
    for label, row in zip(labels, matrix):
        table.add_row(label, *(str(int(count)) for count in row))
    return table
