"""`dltrain eval`: loss and every metric of a trained run on a labelled CSV."""

from ..data import read_features
from ..metrics import evaluate
from .common import _check_argument_order, csv_dialect, load_run


def evaluate_run(run_dir, data_path, dialect: dict | None = None) -> tuple[dict, list[str]]:
    """Loss and every metric of a saved run on a labelled CSV, with the class labels in index order.

    ``dialect``: the CSV's delimiter and encoding (see ``csv_dialect``); detected by default."""
    _check_argument_order("eval", run_dir, data_path)
    run = load_run(run_dir)
    features, targets = read_features(data_path, run.schema, with_target=True, dialect=dialect or csv_dialect())
    return (
        evaluate(
            run.model,
            run.loss,
            features,
            targets,
            run.schema.task,
            detailed=True,
            target_divisor=run.schema.target_divisor,
        ),
        run.schema.class_labels,
    )
