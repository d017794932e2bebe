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
    positives = np.asarray(true_classes) == 1
    scores = np.asarray(positive_scores)
    return mann_whitney_auc(np.sort(scores[~positives]), scores[positives])


def mann_whitney_auc(sorted_negatives, positives) -> float:
    """ROC AUC from the negatives' scores, sorted, and the positives' (in any order).

    U counts, for each positive, the negatives scored below it (and half of those tied with it):
    the positives merged into the negatives by binary search, 4 bytes a row beyond the scores,
    the same value ranking every row together gives."""
    n_positive, n_negative = len(positives), len(sorted_negatives)
    if n_positive == 0 or n_negative == 0:
        return float("nan")
    twice_u = 0  # below + tied-or-below for each positive: twice U, an exact integer
    for begin in range(0, n_positive, 1 << 16):
        chunk = np.asarray(positives[begin : begin + (1 << 16)])
        below = np.searchsorted(sorted_negatives, chunk, "left").sum()
        twice_u += int(below + np.searchsorted(sorted_negatives, chunk, "right").sum())
    return float((twice_u / 2) / (n_positive * n_negative))


class RankedScores:
    """ROC AUC's scores of the second class with the rows' true classes, added a chunk at a
    time: in memory up to SPILL_ROWS rows; beyond, each class's scores are appended to an unnamed
    temporary file (in TMPDIR; gone with the process, whatever ends it) and ranked there, the
    negatives sorted in the file's mapped pages, so the process's own memory stays flat."""

    SPILL_ROWS = 1 << 20

    def __init__(self):
        self.chunks: list = []  # (scores, true classes) of the chunks not yet in the files
        self.rows = 0
        self.files: tuple | None = None  # the negatives' file, the positives'

    def add(self, positive, truth) -> None:
        self.chunks.append((positive.astype(np.float32, copy=True), truth.astype(np.int8)))  # may be reused buffers
        self.rows += len(truth)
        if self.rows > self.SPILL_ROWS:
            self._spill()

    def _spill(self) -> None:
        if self.files is None:
            import tempfile

            self.files = (tempfile.TemporaryFile(), tempfile.TemporaryFile())
        for scores, truth in self.chunks:
            scores, positives = _host(scores), _host(truth) == 1
            self.files[0].write(scores[~positives].tobytes())
            self.files[1].write(scores[positives].tobytes())
        self.chunks = []

    def auc(self) -> float:
        if self.files is None:
            truth = np.concatenate([_host(truth) for _, truth in self.chunks])
            return roc_auc(truth, np.concatenate([_host(scores) for scores, _ in self.chunks]))
        self._spill()
        negatives, positives = (self._mapped(handle) for handle in self.files)
        negatives.sort()  # in place, in the file's pages
        return mann_whitney_auc(negatives, positives)

    @staticmethod
    def _mapped(handle):
        handle.flush()
        count = handle.seek(0, 2) // 4
        return np.memmap(handle, dtype=np.float32, mode="r+", shape=(count,)) if count else np.zeros(0, np.float32)


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
    if matrix.shape[0] == 2 and isinstance(positive_scores, RankedScores):
        results["roc_auc"] = positive_scores.auc()
    elif matrix.shape[0] == 2 and positive_scores is not None:
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


EVAL_ROWS = 1 << 16  # rows scored at a time: a multiple of the model's 4096-row prediction batch


def array_chunks(features, targets, size: int = EVAL_ROWS):
    """(features, targets) of consecutive rows of two arrays, ``size`` rows at a time (views)."""
    for begin in range(0, len(targets), size):
        yield features[begin : begin + size], targets[begin : begin + size]


def evaluate(model, loss, features, targets, task: str, detailed: bool = False, target_divisor=None) -> dict:
    """Loss and scalar metrics of ``model`` on one split, as a flat dict of lowercase names.

    With ``detailed``, classification adds the confusion matrix and per-class scores (as
    arrays in class-index order), and a regression of several targets its scores per target
    (``per_target``, arrays in target order); the caller attaches the names."""
    return evaluate_chunks(model, loss, array_chunks(features, targets), task, detailed, target_divisor)


def evaluate_chunks(
    model, loss, chunks, task: str, detailed: bool = False, target_divisor=None, ranked: bool = True
) -> dict:
    """``evaluate`` on a split given as (features, targets) chunks of EVAL_ROWS rows (the last
    one shorter), in order: the same values whether the rows are in memory or read from disk.
    ``ranked``: compute ROC AUC (which keeps every row's score) where there are two classes."""
    scores = SplitScores(task, loss, target_divisor, ranked=ranked)
    for features, targets in chunks:
        scores.add(model.logits(features), targets)
    return scores.result(detailed)


class SplitScores:
    """The loss and metrics of one split, added a chunk of rows at a time: class counts (a
    confusion matrix) and sums of errors, so that memory does not grow with the rows, but for
    a regression's targets (4 bytes a row, for R²); the scores ROC AUC ranks go to temporary
    files beyond RankedScores.SPILL_ROWS rows. One chunk gives
    exactly what computing them over the whole split at once gives."""

    def __init__(self, task: str, loss=None, target_divisor=None, ranked: bool = True, xp=np, keep_targets=True):
        self.task, self.loss, self.target_divisor, self.ranked, self.xp = task, loss, target_divisor, ranked, xp
        self.keep_targets = keep_targets  # regression: kept for R² unless its denominator is given
        self.loss_sum, self.loss_count, self.chunks = 0.0, 0, 0
        self.matrix = None  # classification: the confusion matrix so far
        self.ranks = RankedScores()  # two classes, ranked: each row's score of the second class
        self.squared = self.absolute = None  # regression: sums of squared and absolute errors
        self.targets: list = []  # regression: each chunk's targets, for R² (total sum of squares)
        self.rows = 0

    def add(self, logits, targets) -> None:
        """A chunk's logits (outputs before the output activation) and encoded targets."""
        value = self.loss.value(logits, targets)
        size = logits.shape[0] if self.loss.name == "cross_entropy" else logits.size
        self.loss_sum += value * size
        self.loss_count += size
        self.last_loss = value
        self.chunks += 1
        outputs = self.loss.predict(logits)
        if self.task == "classification":
            self.add_classes(predicted_classes(outputs), positive_scores(outputs), targets, max(2, outputs.shape[1]))
        else:
            self.add_outputs(outputs, targets)

    def add_classes(self, predicted, positive, targets, n_classes: int) -> None:
        """A chunk's predicted classes, their scores of the second class (None beyond two), true targets."""
        xp = self.xp
        truth = class_indices(targets)
        counts = xp.bincount(truth * n_classes + predicted, minlength=n_classes * n_classes)
        self.matrix = counts if self.matrix is None else self.matrix + counts
        self.rows += len(truth)
        if self.ranked and positive is not None:
            self.ranks.add(positive, truth)

    def add_outputs(self, outputs, targets) -> None:
        """A regression chunk's outputs (in the trained scale) and targets."""
        xp = self.xp
        errors = outputs.astype(np.float64) - targets
        if self.target_divisor is not None:
            errors = errors * xp.asarray(self.target_divisor, dtype=np.float64)
        squared, absolute = xp.sum(errors**2, axis=0), xp.sum(xp.abs(errors), axis=0)
        self.squared = squared if self.squared is None else self.squared + squared
        self.absolute = absolute if self.absolute is None else self.absolute + absolute
        self.rows += len(targets)
        if self.keep_targets:
            self.targets.append(targets.copy())

    def loss_value(self) -> float:
        """The mean loss over every row (the chunk's own where there is one chunk)."""
        return float(self.last_loss if self.chunks == 1 else self.loss_sum / self.loss_count)

    def result(self, detailed: bool = False, total_squares=None) -> dict:
        """The scores so far, as ``evaluate`` gives them. ``total_squares``: the targets' sum of
        squared deviations from their mean (R²'s denominator), when known (else from the kept targets)."""
        results: dict = {"loss": self.loss_value()} if self.chunks else {}
        if self.task != "classification":
            scores = self._regression(total_squares)
            results.update({name: float(np.mean(values)) for name, values in scores.items()})
            if detailed and len(scores["mse"]) > 1:
                results["per_target"] = scores
            return results
        matrix = _host(self.matrix)
        n_classes = int(round(math.sqrt(matrix.size)))
        matrix = matrix.reshape(n_classes, n_classes)
        results.update(classification_scalars(matrix, positive_scores=self.ranks if self.ranks.rows else None))
        if detailed:
            results["per_class"] = per_class_scores(matrix)
            results["confusion_matrix"] = matrix
        return results

    def _regression(self, total_squares=None) -> dict:
        divisor = None if self.target_divisor is None else np.asarray(self.target_divisor, dtype=np.float64)
        residual = _host(self.squared)
        total = total_squares if total_squares is not None else squares_about_mean(self.targets)
        if divisor is not None:
            total = total * divisor**2
        r2 = np.where(residual == 0, 1.0, 0.0)
        r2 = np.where(total > 0, 1.0 - np.divide(residual, total, out=np.zeros_like(total), where=total > 0), r2)
        squared = residual / self.rows
        return {
            "mse": squared,
            "rmse": np.sqrt(squared),
            "mae": _host(self.absolute) / self.rows,
            "r2": r2 if self.rows >= 2 else np.full(r2.shape, np.nan),
        }


def squares_about_mean(target_chunks) -> np.ndarray:
    """The targets' sum of squared deviations from their mean, per target column, in float64: two
    passes over the chunks (one chunk: what ``np.sum((t - t.mean(axis=0)) ** 2, axis=0)`` gives)."""
    chunks = [_host(chunk) for chunk in target_chunks]
    count = sum(len(chunk) for chunk in chunks)
    total = np.zeros(chunks[0].shape[1:], dtype=np.float64)
    for chunk in chunks:
        total = total + np.add.reduce(chunk, axis=0, dtype=np.float64)
    mean = total / count
    squares = np.zeros_like(total)
    for chunk in chunks:
        squares = squares + np.sum((chunk - mean) ** 2, axis=0, dtype=np.float64)
    return squares


def _host(array):
    """A NumPy array of a chunk's values (a device's are copied back once, at the end)."""
    return array.get() if hasattr(array, "get") and not isinstance(array, np.ndarray) else np.asarray(array)
