"""`dltrain eval`: loss and every metric of a trained run on a labelled CSV."""

import math

import numpy as np

from ..data import read_labelled
from ..metrics import evaluate
from .common import _check_argument_order, csv_dialect, file_dialect, load_run


def evaluate_run(run_dir, data_path, dialect: dict | None = None, on_note=None) -> tuple[dict, list[str]]:
    """Loss and every metric of a saved run on a labelled CSV, with the class labels in index order.

    Beside the metrics: ``rows_scored``, ``rows_skipped`` (rows ``missing: drop`` left out, of
    them ``rows_skipped_empty_target``, and the first ones' ``skipped_lines``), and for several
    regression targets ``per_target`` ({target: {metric: value}}; the plain metrics are their
    means). ``dialect``: the CSV's delimiter and encoding (see ``csv_dialect``); detected by default,
    the encoding falling back to the run's (see ``file_dialect``, which tells ``on_note``)."""
    _check_argument_order("eval", run_dir, data_path)
    run = load_run(run_dir)
    dialect = file_dialect(run.schema, data_path, dialect or csv_dialect(), on_note)
    labelled = read_labelled(data_path, run.schema, dialect=dialect)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a NaN row is named below instead
        metrics = evaluate(
            run.model,
            run.loss,
            labelled.features,
            labelled.targets,
            run.schema.task,
            detailed=True,
            target_divisor=run.schema.target_divisor,
        )
    if not math.isfinite(metrics["loss"]):
        # Outputs that overflowed make the loss NaN or inf: name the row, never report metrics
        # computed over NaN. (The check costs a second pass only when the loss shows one.)
        labelled.refuse_non_finite(run.schema, run.model.logits(labelled.features))
    per_target = metrics.pop("per_target", None)
    if per_target is not None:
        metrics["per_target"] = {
            target: {name: float(values[index]) for name, values in per_target.items()}
            for index, target in enumerate(run.schema.targets)
        }
    metrics["rows_scored"] = len(labelled.features)
    metrics["rows_skipped"] = labelled.rows_skipped
    metrics["rows_skipped_empty_target"] = labelled.skipped_for_target
    metrics["skipped_lines"] = labelled.first_skipped_lines
    return metrics, run.schema.class_labels
