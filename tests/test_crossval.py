"""K-fold cross-validation: the folds, `dltrain tune` with `tune.cv`, `dltrain fit --cv`, and the
tune summary and study plot of a cross-validated search."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from dltrain.cli import app
from dltrain.commands import fit as fit_command
from dltrain.data.split import stratified_folds
from dltrain.errors import TrainingInterrupted

optuna = pytest.importorskip("optuna", reason="the tune extra is not installed")

ROOT = Path(__file__).resolve().parents[1]
IRIS = ROOT / "data" / "iris.csv"
runner = CliRunner()


def write_config(folder: Path, tune: dict | None = None, validation=0.2, epochs=4, train=IRIS, name="iris") -> Path:
    config = {
        "name": name,
        "seed": 0,
        "data": {"train": str(train), "target": "species", "validation": validation},
        "model": {"layers": [{"units": 8, "activation": "relu"}]},
        "optimizer": {"name": "adam", "lr": 0.02},
        "train": {"epochs": epochs, "batch_size": 16},
    }
    if tune is not None:
        config["tune"] = tune
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def trials_of(study_dir: Path) -> list[dict]:
    return list(csv.DictReader((study_dir / "trials.csv").open()))


# ---------------------------------------------------------------- the folds


def test_every_row_is_held_out_once_and_every_fold_keeps_each_class_share():
    labels = np.array(["a"] * 10 + ["b"] * 20 + ["c"] * 7)
    folds = stratified_folds(labels, len(labels), 5, np.random.default_rng(0))
    held_out = np.concatenate([held for _, held in folds])
    assert sorted(held_out.tolist()) == list(range(len(labels)))
    for train, held in folds:
        assert not set(train) & set(held) and len(train) + len(held) == len(labels)
        counts = {label: int((labels[held] == label).sum()) for label in "abc"}
        assert counts["a"] == 2 and counts["b"] == 4 and counts["c"] in (1, 2)
    assert max(len(held) for _, held in folds) - min(len(held) for _, held in folds) <= 1
    again = stratified_folds(labels, len(labels), 5, np.random.default_rng(0))
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))  # seeded: the same folds
    numbers = stratified_folds(None, 23, 4, np.random.default_rng(1))
    assert sorted(np.concatenate([held for _, held in numbers]).tolist()) == list(range(23))


def test_a_class_with_fewer_rows_than_folds_is_one_message_naming_it(tmp_path):
    rows = list(csv.reader(IRIS.open()))
    # virginica keeps 3 rows: too few for 5 folds, enough for the 0.2 validation split.
    kept = [row for row in rows[1:] if row[-1] != "virginica"] + [row for row in rows[1:] if row[-1] == "virginica"][:3]
    small = tmp_path / "small.csv"
    with small.open("w", newline="") as handle:
        csv.writer(handle).writerows([rows[0], *kept])
    tuned = write_config(tmp_path, {"cv": 5, "trials": 2, "space": {"optimizer.lr": [0.01, 0.02]}}, train=small)
    result = runner.invoke(app, ["tune", str(tuned), "--out", str(tmp_path / "study")])
    assert result.exit_code == 2, result.output
    assert "class 'virginica' has only 3 rows; 5-fold cross-validation (tune.cv: 5)" in result.output
    assert "at least 5 rows per class" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "study" / "journal.log").exists()  # refused before any trial
    checked = runner.invoke(app, ["check", str(tuned)])
    assert checked.exit_code == 2 and "class 'virginica' has only 3 rows" in checked.output
    fitted = runner.invoke(app, ["fit", str(tuned), "--out", str(tmp_path / "run"), "--cv", "4"])
    assert fitted.exit_code == 2
    assert "class 'virginica' has only 3 rows; 4-fold cross-validation (--cv 4)" in fitted.output
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- tune with tune.cv


@pytest.fixture(scope="module")
def cv_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cv")
    space = {
        "optimizer.lr": {"low": 0.005, "high": 0.1, "log": True},
        "model.layers": [
            [{"units": 4, "activation": "relu"}],
            [{"units": 8, "activation": "tanh"}, {"units": 4, "activation": "relu"}],
        ],
        "model.layers[0].units": [3, 12],
    }
    config = write_config(folder, {"cv": 3, "trials": 3, "pruner": "none", "space": space})
    result = runner.invoke(app, ["tune", str(config), "--out", str(folder / "study")])
    assert result.exit_code == 0, result.output
    return folder, folder / "study", result.output


def test_each_trial_is_the_mean_of_its_folds_with_their_spread_in_trials_csv_and_study_json(cv_study):
    _, study_dir, output = cv_study
    rows = trials_of(study_dir)
    assert list(rows[0])[:7] == ["number", "state", "value", "spread", "fold_1", "fold_2", "fold_3"]
    for row in rows:
        folds = [float(row[f"fold_{index}"]) for index in (1, 2, 3)]
        assert float(row["value"]) == pytest.approx(np.mean(folds), rel=1e-9)
        assert float(row["spread"]) == pytest.approx(np.std(folds), rel=1e-9)
        assert len(set(folds)) == 3  # three different held-out folds
    meta = json.loads((study_dir / "study.json").read_text())
    best = min(rows, key=lambda row: float(row["value"]))
    assert meta["cv"] == 3 and meta["best"]["number"] == int(best["number"])
    assert meta["best"]["spread"] == pytest.approx(float(best["spread"]))
    assert re.search(r"best: trial \d+, val_loss [\d.]+ ± [\d.]+ over 3 folds", output)
    assert "(mean of 3 folds, spread" in (study_dir / "best.yaml").read_text().splitlines()[0]


def test_fit_cv_of_best_yaml_repeats_the_trials_folds_then_trains_the_same_run_as_without(cv_study, tmp_path):
    _, study_dir, _ = cv_study
    best = min(trials_of(study_dir), key=lambda row: float(row["value"]))
    result = runner.invoke(app, ["fit", str(study_dir / "best.yaml"), "--cv", "3", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    output = result.output
    assert "cross-validation: 3 folds of the 150 training rows, stratified by class" in output
    shown = [float(value) for value in re.findall(r"fold \d/3: held-out loss ([\d.]+)", output)]
    assert shown == pytest.approx([float(best[f"fold_{index}"]) for index in (1, 2, 3)], abs=6e-5)
    mean, spread = re.search(r"│ loss +│ +([\d.]+) │ +([\d.]+) │", output).groups()
    assert float(mean) == pytest.approx(float(best["value"]), abs=6e-5)
    assert float(spread) == pytest.approx(float(best["spread"]), abs=6e-5)
    assert output.index("cross-validated metrics") < output.index("epoch 1/")  # before the run trains
    # The run is the one best/ holds: trained once, on the training rows, as without --cv.
    assert (tmp_path / "run" / "model.npz").read_bytes() == (study_dir / "best" / "model.npz").read_bytes()


def test_the_summary_and_trial_lines_show_the_network_each_trial_trained(cv_study):
    _, study_dir, output = cv_study
    lines = [line for line in output.splitlines() if "] trial " in line]
    assert len(lines) == 3
    for row, line in zip(trials_of(study_dir), lines):
        units = row["model.layers[0].units"]  # drawn after the architecture, it replaces its first width
        assert row["network"].startswith(f"{units} ")
        assert f"network={row['network']}" in line and "model.layers=" not in line
        assert re.search(r"val_loss [\d.]+ ± [\d.]+", line)
    assert "network" in output.split("best trials")[1].splitlines()[2]


def test_the_study_plot_draws_a_log_searched_range_on_a_log_axis_and_choices_as_written(cv_study, monkeypatch):
    from dltrain import plot

    _, study_dir, _ = cv_study
    drawn = []
    monkeypatch.setattr(plot, "_save", lambda plt, figure, out, image_format: drawn.append(figure) or out)
    plot.plot_study(study_dir)
    axes = {axis.get_xlabel().split(" (")[0]: axis for axis in drawn[0].axes[1:]}
    assert axes["optimizer.lr"].get_xscale() == "log"
    labels = [label.get_text() for label in axes["model.layers"].get_xticklabels()]
    assert labels == ["4 relu", "8 tanh, 4 relu"]
    assert [label.get_text() for label in axes["model.layers[0].units"].get_xticklabels()] == ["3", "12"]
    assert set(axes) == {"optimizer.lr", "model.layers", "model.layers[0].units"}  # no spread, folds or network


def test_a_cross_validated_search_needs_no_validation_split(tmp_path):
    config = write_config(tmp_path, {"cv": 2, "trials": 1, "space": {"optimizer.lr": [0.02]}}, validation=0)
    result = runner.invoke(app, ["tune", str(config), "--out", str(tmp_path / "study"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "study" / "best" / "model.json").exists()


# ---------------------------------------------------------------- fit --cv


def test_fit_cv_stopped_by_ctrl_c_saves_nothing_and_says_so(tmp_path):
    config = write_config(tmp_path)

    def stop(index, folds):
        raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match=r"interrupted during the cross-validation \(--cv 3\); nothing was"):
        fit_command.fit(config, out=tmp_path / "run", cv=3, on_fold=stop)
    assert not (tmp_path / "run").exists()
    resumed = runner.invoke(app, ["fit", str(config), "--out", str(tmp_path / "run"), "--cv", "3", "--resume"])
    assert resumed.exit_code == 2 and "--cv 3 with --resume" in resumed.output


def test_init_writes_a_search_scored_by_cross_validation_for_small_data_that_checks_once_uncommented(tmp_path):
    config = tmp_path / "iris.yaml"
    assert runner.invoke(app, ["init", str(IRIS), "--target", "species", "--out", str(config)]).exit_code == 0
    text = config.read_text()
    assert "#   cv: 5" in text and "120 training rows: score each trial by 5-fold cross-validation" in text
    block = text[text.index("# tune:") :]
    config.write_text(text.replace(block, "\n".join(line[2:] for line in block.splitlines()) + "\n"))
    checked = runner.invoke(app, ["check", str(config)])
    assert checked.exit_code == 0, checked.output
    assert "tune: 3 entries in tune.space, tpe sampler, metric val_loss over 5 folds: OK" in checked.output
