"""Every shipped config trains to a stated quality; gd reaches the least-squares optimum."""

import numpy as np
import pytest

import dltrain
from dltrain.commands import evaluate, fit
from dltrain.data import CsvFile

QUALITY = {
    # config: (split, metric, threshold, higher is better)
    "iris": ("validation", "accuracy", 0.9, True),
    "breast_cancer": ("validation", "accuracy", 0.95, True),
    "digits": ("validation", "accuracy", 0.95, True),
    "diabetes": ("validation", "r2", 0.3, True),
}


@pytest.mark.parametrize("name", sorted(QUALITY))
def test_shipped_config_reaches_its_quality(name, root, tmp_path):
    split, metric, threshold, _ = QUALITY[name]
    result = fit.fit(root / "configs" / f"{name}.yaml", out=tmp_path / "run")
    assert result.metrics[split][metric] >= threshold
    evaluated, _ = evaluate.evaluate_run(tmp_path / "run", root / "data" / f"{name}.csv")
    assert np.isfinite(evaluated["loss"])


def test_every_shipped_config_has_a_quality_bar(root):
    shipped = {path.stem for path in (root / "configs").glob("*.yaml")} - {"fashion_mnist"}
    assert shipped == set(QUALITY)


def test_linear_model_with_gd_reaches_the_least_squares_optimum(root, tmp_path):
    overrides = [
        "model.layers=[]",
        "loss=mse",
        "optimizer={name: gd, lr: 0.2}",
        "data.validation=0",
        "train.epochs=3000",
        "train.tolerance=null",
        "train.early_stopping=null",
    ]
    result = fit.fit(root / "configs" / "diabetes.yaml", overrides, out=tmp_path / "run")
    run = dltrain.load(tmp_path / "run")
    columns = CsvFile.open(root / "data" / "diabetes.csv").read(numeric=[*run.schema.feature_names, "progression"])
    features = run.schema.transform(columns.matrix[:, :-1]).astype(np.float64)
    target = columns.matrix[:, -1:].astype(np.float64)
    design = np.column_stack([features, np.ones(len(features))])
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    optimum = float(np.mean((design @ solution - target) ** 2))
    trained = result.metrics["train"]["mse"]
    assert trained >= optimum * (1 - 1e-6)
    assert trained <= optimum * 1.001


def test_same_seed_gives_bit_identical_models(root, tmp_path):
    for folder in ("a", "b"):
        fit.fit(root / "configs" / "iris.yaml", ["train.epochs=5"], out=tmp_path / folder)
    assert (tmp_path / "a" / "model.npz").read_bytes() == (tmp_path / "b" / "model.npz").read_bytes()
    fit.fit(root / "configs" / "iris.yaml", ["train.epochs=5", "seed=1"], out=tmp_path / "c")
    assert (tmp_path / "a" / "model.npz").read_bytes() != (tmp_path / "c" / "model.npz").read_bytes()
