"""Metric functions on model outputs, ``evaluate`` for a whole split, and per-epoch scalars.

Classification metrics are computed from a confusion matrix, so the training loop can build
them on the fly from the predictions it already made, without a second pass.
"""

from __future__ import annotations

import math

import numpy as np

# Scalar metrics that can be logged per epoch, and whether larger is better.
CLASSIFICATION_METRICS = {
    "accuracy": True,
    "balanced_accuracy": True,
    "precision_macro": True,
    "recall_macro": True,
    "f1_macro": True,
    "roc_auc": True,
}
REGRESSION_METRICS = {"mse": False, "rmse": False, "mae": False, "r2": True}
DEFAULT_METRICS = {"classification": ["accuracy"], "regression": ["mse", "rmse", "mae", "r2"]}


def higher_is_better(name: str) -> bool:
    """Direction of a logged value: ``val_accuracy`` up, ``loss`` and ``val_mse`` down."""
    base = name.removeprefix("val_")
    return CLASSIFICATION_METRICS.get(base, REGRESSION_METRICS.get(base, False))


def format_value(value) -> str:
    """A metric as shown in a line or a table: four decimals, or scientific when tiny."""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.3e}"
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def epoch_line(record: dict, epochs: int) -> str:
    """An epoch's line of `dltrain fit`: the epoch, every logged value, the seconds it took."""
    parts = [f"epoch {record['epoch']}/{epochs}"]
    parts += [f"{key} {format_value(value)}" for key, value in record.items() if key not in ("epoch", "seconds", "lr")]
    parts.append(f"{record['seconds']:.2f}s")
    return "  ".join(parts)


def logged_names(metrics, has_validation: bool) -> list[str]:
    """The values fit logs each epoch: the loss and ``metrics``, and ``val_`` of each with validation data."""
    names = ["loss", *metrics]
    return names + [f"val_{name}" for name in names] if has_validation else names


def predicted_classes(outputs: np.ndarray) -> np.ndarray:
    """Class indices from probabilities: threshold 0.5 for one sigmoid output, else argmax."""
    if outputs.shape[1] == 1:
        return (outputs[:, 0] >= 0.5).astype(np.int64)
    return outputs.argmax(axis=1)


def class_indices(targets: np.ndarray) -> np.ndarray:
    """Integer class indices from encoded targets (indices, or a 0/1 column for binary)."""
    return targets.reshape(-1).astype(np.int64) if targets.ndim == 2 else targets


def confusion_matrix(true_classes, predicted, n_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    return np.bincount(true_classes * n_classes + predicted, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def _safe_ratio(numerator, denominator):
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def per_class_scores(matrix: np.ndarray) -> dict:
    """Precision, recall, F1 and support per class (0 where undefined, as scikit-learn does)."""
    true_positive = np.diag(matrix).astype(np.float64)
    precision = _safe_ratio(true_positive, matrix.sum(axis=0))
    recall = _safe_ratio(true_positive, matrix.sum(axis=1))
    f1 = _safe_ratio(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": matrix.sum(axis=1)}


def roc_auc(true_classes, positive_scores) -> float:
    """Area under the ROC curve for two classes (Mann-Whitney U, ties counted half)."""
    positives = true_classes == 1
    n_positive, n_negative = int(positives.sum()), int((~positives).sum())
    if n_positive == 0 or n_negative == 0:
        return float("nan")
    order = np.argsort(positive_scores, kind="mergesort")
    sorted_scores = positive_scores[order]
    ranks = np.empty(len(order), dtype=np.float64)
    ranks[order] = np.arange(1, len(order) + 1)
    # Average the ranks of tied scores.
    unique, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first[counts > 1], counts[counts > 1]):
        ranks[order[start : start + count]] = start + (count + 1) / 2
    rank_sum = ranks[positives].sum()
    return float((rank_sum - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def classification_scalars(matrix: np.ndarray, true_classes=None, positive_scores=None) -> dict:
    """Every scalar classification metric from a confusion matrix (and scores, for ROC AUC)."""
    total = matrix.sum()
    scores = per_class_scores(matrix)
    # As scikit-learn: macro averages run over the labels seen in the truth or the predictions
    # (a class absent from both says nothing), balanced accuracy over the classes in the truth.
    in_truth = scores["support"] > 0
    seen = in_truth | (matrix.sum(axis=0) > 0)
    results = {
        "accuracy": float(np.trace(matrix) / total) if total else float("nan"),
        "balanced_accuracy": float(scores["recall"][in_truth].mean()) if in_truth.any() else float("nan"),
        "precision_macro": float(scores["precision"][seen].mean()) if seen.any() else float("nan"),
        "recall_macro": float(scores["recall"][seen].mean()) if seen.any() else float("nan"),
        "f1_macro": float(scores["f1"][seen].mean()) if seen.any() else float("nan"),
    }
    if matrix.shape[0] == 2 and positive_scores is not None:
        results["roc_auc"] = roc_auc(true_classes, positive_scores)
    return results


def regression_scores(targets: np.ndarray, outputs: np.ndarray, target_divisor=None) -> dict:
    """MSE, RMSE, MAE and R² of each output column, as arrays of one value per target.

    ``target_divisor``: the per-column scale the targets were divided by in training; errors
    are multiplied back, so every figure is in the target's own units (R² is scale-free)."""
    errors = outputs.astype(np.float64) - targets
    if target_divisor is not None:
        errors = errors * np.asarray(target_divisor, dtype=np.float64)
    squared = np.mean(errors**2, axis=0)
    total = np.sum((targets - targets.mean(axis=0, dtype=np.float64)) ** 2, axis=0, dtype=np.float64)
    residual = np.sum(errors**2, axis=0)
    if target_divisor is not None:
        total = total * np.asarray(target_divisor, dtype=np.float64) ** 2
    # As scikit-learn's r2_score: a constant target scores 1.0 when predicted exactly, else
    # 0.0; fewer than two rows leave R² undefined (NaN).
    r2 = np.where(residual == 0, 1.0, 0.0)
    r2 = np.where(total > 0, 1.0 - np.divide(residual, total, out=np.zeros_like(total), where=total > 0), r2)
    return {
        "mse": squared,
        "rmse": np.sqrt(squared),
        "mae": np.mean(np.abs(errors), axis=0),
        "r2": r2 if len(targets) >= 2 else np.full(r2.shape, np.nan),
    }


def regression_metrics(targets: np.ndarray, outputs: np.ndarray, target_divisor=None) -> dict:
    """MSE, RMSE, MAE and R², each the mean of its per-target values (see ``regression_scores``);
    for one target, that target's."""
    scores = regression_scores(targets, outputs, target_divisor)
    return {name: float(np.mean(values)) for name, values in scores.items()}


def positive_scores(outputs: np.ndarray):
    """The probability of the second class, for ROC AUC; None unless there are two classes."""
    if outputs.shape[1] == 1:
        return outputs[:, 0]
    return outputs[:, 1] if outputs.shape[1] == 2 else None


def evaluate(model, loss, features, targets, task: str, detailed: bool = False, target_divisor=None) -> dict:
    """Loss and scalar metrics of ``model`` on one split, as a flat dict of lowercase names.

    With ``detailed``, classification adds the confusion matrix and per-class scores (as
    arrays in class-index order), and a regression of several targets its scores per target
    (``per_target``, arrays in target order); the caller attaches the names."""
    logits = model.logits(features)
    results = {"loss": loss.value(logits, targets)}
    outputs = loss.predict(logits)
    if task != "classification":
        scores = regression_scores(targets, outputs, target_divisor)
        results.update({name: float(np.mean(values)) for name, values in scores.items()})
        if detailed and outputs.shape[1] > 1:
            results["per_target"] = scores
        return results
    n_classes = max(2, outputs.shape[1])
    true_classes = class_indices(targets)
    matrix = confusion_matrix(true_classes, predicted_classes(outputs), n_classes)
    results.update(classification_scalars(matrix, true_classes, positive_scores(outputs)))
    if detailed:
        results["per_class"] = per_class_scores(matrix)
        results["confusion_matrix"] = matrix
    return results
