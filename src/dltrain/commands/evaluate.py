"""`dltrain eval`: loss and every metric of a trained run on a labelled CSV."""

from ..api import csv_dialect, load
from .arguments import check_argument_order


def evaluate_run(
    run_dir, data_path, dialect: dict | None = None, on_note=None, device: str | None = None
) -> tuple[dict, list[str]]:
    """``Run.evaluate`` of a saved run on a labelled CSV, with the class labels in index order.

    ``dialect``: the CSV's delimiter and encoding (see ``api.csv_dialect``); detected by default,
    the encoding falling back to the run's (see ``api.file_dialect``, which tells ``on_note``)."""
    check_argument_order("eval", run_dir, data_path)
    run = load(run_dir, device)
    metrics = run.evaluate(data_path, **(dialect or csv_dialect()), on_note=on_note)
    return metrics, run.schema.class_labels
