"""Metric functions on model outputs, and ``evaluate`` for a whole split."""

from __future__ import annotations

import numpy as np

CLASSIFICATION_METRICS = ("accuracy",)
REGRESSION_METRICS = ("mse", "rmse", "mae", "r2")


def predicted_classes(outputs: np.ndarray) -> np.ndarray:
    """Class indices from probabilities: threshold 0.5 for one sigmoid output, else argmax."""
    if outputs.shape[1] == 1:
        return (outputs[:, 0] >= 0.5).astype(np.int64)
    return outputs.argmax(axis=1)


def class_indices(targets: np.ndarray) -> np.ndarray:
    """Integer class indices from encoded targets (indices, or a 0/1 column for binary)."""
    return targets.reshape(-1).astype(np.int64) if targets.ndim == 2 else targets


def accuracy(true_classes, predicted) -> float:
    return float(np.mean(true_classes == predicted)) if len(true_classes) else float("nan")


def regression_metrics(targets: np.ndarray, outputs: np.ndarray) -> dict:
    errors = outputs.astype(np.float64) - targets
    mse = float(np.mean(errors ** 2))
    total = float(np.sum((targets - targets.mean(axis=0)) ** 2, dtype=np.float64))
    residual = float(np.sum(errors ** 2))
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(errors))),
        "r2": 1.0 - residual / total if total > 0 else float("nan"),
    }


def evaluate(model, loss, features, targets, task: str) -> dict:
    """Loss and metrics of ``model`` on one split, as a flat dict of lowercase names."""
    logits = model.logits(features)
    results = {"loss": loss.value(logits, targets)}
    outputs = loss.predict(logits)
    if task == "classification":
        results["accuracy"] = accuracy(class_indices(targets), predicted_classes(outputs))
    else:
        results.update(regression_metrics(targets, outputs))
    return results
