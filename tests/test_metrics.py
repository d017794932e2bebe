"""Metrics agree with scikit-learn's definitions (expected values computed by hand)."""

import numpy as np
import pytest

from dltrain.metrics import (
    RankedScores,
    classification_scalars,
    confusion_matrix,
    per_class_scores,
    regression_metrics,
    roc_auc,
)


def test_macro_averages_skip_classes_absent_from_truth_and_predictions():
    # Ten classes known to the model, only 0..3 appear (a digits split without 4..9).
    truth = np.array([0, 1, 2, 3, 3])
    predicted = np.array([0, 1, 2, 3, 0])
    scalars = classification_scalars(confusion_matrix(truth, predicted, 10))
    # precision: 0 -> 1/2, 1, 2, 3 -> 1; recall: 3 -> 1/2, others 1; f1: 0 -> 2/3, 3 -> 2/3.
    assert scalars["precision_macro"] == pytest.approx((0.5 + 3) / 4)
    assert scalars["recall_macro"] == pytest.approx((3 + 0.5) / 4)
    assert scalars["f1_macro"] == pytest.approx((2 / 3 + 1 + 1 + 2 / 3) / 4)
    assert scalars["balanced_accuracy"] == pytest.approx(0.875)


def test_a_predicted_class_absent_from_the_truth_counts_in_macro_but_not_in_balanced_accuracy():
    truth = np.array([0, 0, 1])
    predicted = np.array([0, 2, 1])
    scalars = classification_scalars(confusion_matrix(truth, predicted, 3))
    assert scalars["precision_macro"] == pytest.approx((1 + 1 + 0) / 3)
    assert scalars["recall_macro"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert scalars["f1_macro"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert scalars["balanced_accuracy"] == pytest.approx((0.5 + 1) / 2)


def test_r2_of_a_constant_target_is_one_when_exact_else_zero():
    constant = np.full((3, 1), 3.0)
    assert regression_metrics(constant, constant)["r2"] == 1.0
    assert regression_metrics(constant, constant + 1)["r2"] == 0.0
    assert np.isnan(regression_metrics(constant[:1], constant[:1])["r2"])
    # Per output, then averaged: a constant column that is missed scores 0.
    targets = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    outputs = np.array([[1.0, 4.0], [2.0, 4.0], [5.0, 4.0]])
    assert regression_metrics(targets, outputs)["r2"] == pytest.approx(((1 - 4 / 2) + 0.0) / 2)


def test_regression_metrics_undo_the_target_scale():
    targets = np.array([[1.0, 10.0], [2.0, 30.0], [3.0, 20.0]])
    outputs = np.array([[1.5, 12.0], [2.0, 26.0], [2.0, 20.0]])
    divisor = np.array([2.0, 10.0])
    scaled = regression_metrics(targets / divisor, outputs / divisor, divisor)
    plain = regression_metrics(targets, outputs)
    for name in ("mse", "rmse", "mae", "r2"):
        assert scaled[name] == pytest.approx(plain[name])
    assert plain["mae"] == pytest.approx((0.5 + 0 + 1 + 2 + 4 + 0) / 6)


def test_confusion_matrix_and_class_scores_by_hand():
    true = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 0, 1, 2, 2])
    matrix = confusion_matrix(true, predicted, 3)
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    scores = per_class_scores(matrix)
    np.testing.assert_allclose(scores["precision"], [1.0, 0.5, 0.5])
    np.testing.assert_allclose(scores["recall"], [2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(scores["f1"], [0.8, 0.5, 2 / 3])
    scalars = classification_scalars(matrix)
    assert scalars["accuracy"] == pytest.approx(4 / 6)
    assert scalars["balanced_accuracy"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert scalars["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_roc_auc_by_hand_with_ties():
    # Pairs (positive, negative): 0.8>0.1 ✓, 0.8>0.4 ✓, 0.4=0.4 half, 0.4>0.1 ✓ -> 3.5 / 4
    assert roc_auc(np.array([1, 0, 1, 0]), np.array([0.8, 0.4, 0.4, 0.1])) == pytest.approx(0.875)
    assert roc_auc(np.array([1, 1, 0]), np.array([0.9, 0.8, 0.1])) == 1.0


def test_regression_metrics_by_hand():
    targets = np.array([[1.0], [2.0], [3.0]])
    outputs = np.array([[1.0], [2.0], [5.0]])
    metrics = regression_metrics(targets, outputs)
    assert metrics["mse"] == pytest.approx(4 / 3)
    assert metrics["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert metrics["mae"] == pytest.approx(2 / 3)
    assert metrics["r2"] == pytest.approx(1 - 4 / 2)


class _Identity:
    """A model whose logits are its inputs, and a loss that reads them as they are."""

    name = "mse"

    def logits(self, features):
        return features

    def value(self, logits, targets):
        return float(np.mean((logits - targets) ** 2))

    def predict(self, logits):
        return logits


def test_scores_added_a_chunk_at_a_time_equal_those_of_the_whole_split(monkeypatch):
    from dltrain import batches
    from dltrain.metrics import evaluate_chunks, regression_scores, squares_about_mean

    monkeypatch.setattr(batches, "SCORED_ROWS", 1000)

    rng = np.random.default_rng(0)
    targets = rng.standard_normal((1000, 2)).astype(np.float32)
    outputs = (targets + rng.standard_normal((1000, 2))).astype(np.float32)
    chunked = evaluate_chunks(
        _Identity(),
        _Identity(),
        ((outputs[b : b + 96], targets[b : b + 96]) for b in range(0, 1000, 96)),
        "regression",
        target_divisor=[2.0, 3.0],
    )
    whole = regression_scores(targets, outputs, [2.0, 3.0])
    for name in ("mse", "mae", "r2"):
        assert chunked[name] == pytest.approx(float(np.mean(whole[name])), rel=1e-9)
    assert chunked["loss"] == pytest.approx(float(np.mean((outputs - targets) ** 2)), rel=1e-6)

    truth = rng.integers(0, 2, 5000)
    logits = np.column_stack([np.zeros(5000), np.round(rng.standard_normal(5000) + truth, 1)]).astype(np.float32)
    epoch = batches.EpochScores("classification", 2, ranked=True)
    for begin in range(0, 5000, 300):  # batches that straddle the buffer's edge, in a reused buffer
        epoch.record(logits[begin : begin + 300], None, truth[begin : begin + 300])
    expected = classification_scalars(confusion_matrix(truth, logits.argmax(axis=1), 2), truth, logits[:, 1])
    assert epoch.metrics() == pytest.approx(expected)
    assert squares_about_mean(np.array_split(targets, 7)) == pytest.approx(
        np.sum((targets - targets.mean(axis=0)) ** 2, axis=0)
    )


def test_roc_auc_counts_every_pair_of_a_positive_and_a_negative_ties_half():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 300)
    scores = np.round(rng.standard_normal(300), 1)  # many ties
    above = scores[truth == 1][:, None] - scores[truth == 0][None, :]
    pairs = (np.sum(above > 0) + 0.5 * np.sum(above == 0)) / above.size
    assert roc_auc(truth, scores) == pytest.approx(pairs, rel=1e-12)


def test_roc_auc_of_scores_beyond_memory_is_ranked_in_files_and_equal(monkeypatch):
    """Past SPILL_ROWS rows the scores go to temporary files, ranked there: the same value, to the bit."""
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 2, 5_000)
    scores = np.round(rng.random(5_000), 2).astype(np.float32)  # many ties
    monkeypatch.setattr(RankedScores, "SPILL_ROWS", 1_000)
    ranked = RankedScores()
    for part in np.array_split(np.arange(5_000), 13):
        ranked.add(scores[part], truth[part])
    assert ranked.files is not None and ranked.chunks == []  # in the files, not in memory
    assert ranked.auc() == roc_auc(truth, scores)
    one_class = RankedScores()
    one_class.add(scores, np.ones(5_000, dtype=np.int64))
    assert np.isnan(one_class.auc())
