"""The tables several commands print: metrics by split, one metric a row, the model's layers,
the columns ranked by importance."""

from __future__ import annotations

from ..metrics import format_value
from .console import Table


def metrics_table(metrics_by_split: dict, title: str | None = None, columns=None) -> Table:
    """Rows: splits (train, validation, test); columns: metrics (all, or those named)."""
    names = list(columns or [])
    if not names:
        for values in metrics_by_split.values():
            names.extend(name for name in values if name not in names)
    table = Table(title=title)
    table.add_column("split")
    for name in names:
        table.add_column(name, justify="right")
    for split, values in metrics_by_split.items():
        table.add_row(split, *(format_value(values.get(name, "")) for name in names))
    return table


def scalar_table(metrics: dict, title: str) -> Table:
    """One metric a row: stays readable however many metrics there are."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, format_value(value))
    return table


def summary_table(rows) -> Table:
    table = Table(title="model")
    for column in ("layer", "output shape", "parameters"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    total = 0
    for name, shape, count in rows:
        total += count
        table.add_row(name, shape, f"{count:,}")
    table.add_row("total", "", f"{total:,}", style="bold")
    return table


def importance_table(rows, title="permutation importance") -> Table:
    """Columns by importance: the mean rise of the loss when shuffled, ± its spread over repeats."""
    table = Table(title=title)
    table.add_column("rank", justify="right")
    table.add_column("column")
    table.add_column("importance", justify="right")
    table.add_column("± spread", justify="right")
    for rank, row in enumerate(rows, start=1):
        table.add_row(str(rank), row["column"], f"{row['importance']:.4f}", f"{row['spread']:.4f}")
    return table
