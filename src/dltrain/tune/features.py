"""Feature selection: the columns ranked once by permutation importance, each trial keeping the top k."""

from __future__ import annotations

import csv
import io
from dataclasses import replace

import numpy as np

RANKING_ATTR = "feature_importance"  # the study's ranking: [{column, importance, spread}, …]
COLUMNS_ATTR = "columns"  # the columns in the file's order, for best.yaml


def ranking(study) -> list | None:
    """The study's column names, most important first (None before the ranking fit)."""
    rows = study.user_attrs.get(RANKING_ATTR)
    return [row["column"] for row in rows] if rows else None


def rank_features(fitting, trainer, data, config) -> list:
    """Train ``trainer`` (the config as written), then rank its columns by permutation importance on validation."""
    trainer.run()
    importances = fitting.importance(
        trainer.model, trainer.loss, data.schema, data.validation.features, data.validation.targets, config.seed
    )
    return [{"column": item.column, "importance": item.importance, "spread": item.spread} for item in importances]


def importance_csv(rows: list) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "column", "importance", "spread"])
    for rank, row in enumerate(rows, start=1):
        writer.writerow([rank, row["column"], f"{row['importance']:.6g}", f"{row['spread']:.6g}"])
    return buffer.getvalue()


def chosen_columns(columns: list, ranked: list | None, k: int) -> list:
    """The ``k`` top-ranked columns in the file's order, so a fit of best.yaml lays out its inputs the same."""
    chosen = set((ranked or [])[:k])
    return [name for name in columns if name in chosen]


def without_dropped_settings(config, features: list):
    """``config`` whose ``data.columns`` keeps the settings of the chosen ``features`` and of the
    targets only: fit refuses a setting for a column that ``data.features`` leaves out (an
    init-written config has one for every column)."""
    data = config.data
    targets = {data.target} if isinstance(data.target, str) else set(data.target)
    kept = {name: spec for name, spec in data.columns.items() if name in features or name in targets}
    return config.model_copy(update={"data": data.model_copy(update={"columns": kept})})


def _column_blocks(schema, keep: list) -> np.ndarray:
    indices: list[int] = []
    start = 0
    for column in schema.columns:
        if column.name in keep:
            indices.extend(range(start, start + column.width))
        start += column.width
    return np.asarray(indices, dtype=np.intp)


def select_columns(data, keep: list):
    """The prepared data with only the ``keep`` columns' inputs: what a fit with data.features = keep reads."""
    schema = data.schema
    inputs = _column_blocks(schema, keep)
    columns = [column for column in schema.columns if column.name in keep]
    scaler = schema.scaler.model_copy(update={"offset": schema.offset[inputs], "divisor": schema.divisor[inputs]})
    sub_schema = schema.model_copy(
        update={"feature_names": [column.name for column in columns], "columns": columns, "scaler": scaler}
    )

    def cut(split):
        return None if split is None else replace(split, features=np.ascontiguousarray(split.features[:, inputs]))

    return replace(data, schema=sub_schema, train=cut(data.train), validation=cut(data.validation), test=cut(data.test))
