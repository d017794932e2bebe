"""The command line as a user meets it: exit codes, messages, files, output formats."""

import csv
import io
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from dltrain.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(arg) for arg in args])


@pytest.fixture
def project(tmp_path, root):
    """A folder with the iris CSV and a small, fast config."""
    shutil.copy(root / "data" / "iris.csv", tmp_path / "iris.csv")
    (tmp_path / "iris.yaml").write_text(
        "name: iris\nseed: 0\ndata: {train: iris.csv, target: species, validation: 0.2}\n"
        "model:\n  layers:\n    - {units: 8, activation: relu}\n"
        "optimizer: {name: adam, lr: 0.02}\ntrain: {epochs: 20, batch_size: 16}\n"
    )
    return tmp_path


@pytest.fixture
def trained(project):
    result = run("fit", project / "iris.yaml", "--out", project / "run", "--quiet")
    assert result.exit_code == 0, result.output
    return project / "run"


def test_fit_writes_the_run_folder(trained):
    assert sorted(path.name for path in trained.iterdir()) == [
        "checkpoint.npz",
        "config.yaml",
        "history.csv",
        "model.json",
        "model.npz",
    ]
    manifest = json.loads((trained / "model.json").read_text())
    assert manifest["data"]["class_labels"] == ["setosa", "versicolor", "virginica"]
    assert manifest["data"]["feature_names"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert set(manifest["data"]["scaler"]) == {"method", "offset", "divisor"}
    assert manifest["config"]["loss"] == "cross_entropy"
    assert manifest["config"]["model"]["output"]["activation"] == "softmax"
    assert len(manifest["model_sha256"]) == 64
    for key in ("format_version", "dltrain_version", "numpy_version", "metrics"):
        assert key in manifest
    history = list(csv.DictReader(io.StringIO((trained / "history.csv").read_text())))
    assert len(history) == 20
    assert list(history[0]) == ["epoch", "lr", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"]


def test_fit_prints_one_line_per_epoch_when_not_a_terminal(project):
    result = run("fit", project / "iris.yaml", "--out", project / "run", "--set", "train.epochs=3")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert "val_accuracy" in lines[0]
    assert "validation" in result.output  # the summary table


def test_quiet_prints_only_the_summary(project):
    result = run("fit", project / "iris.yaml", "--out", project / "run", "--quiet")
    assert "epoch 1/" not in result.output
    assert "accuracy" in result.output


def test_default_run_folder_moves_on_when_taken(project, monkeypatch):
    monkeypatch.chdir(project)
    for expected in ("iris", "iris-2", "iris-3"):
        result = run("fit", "iris.yaml", "--quiet", "--set", "train.epochs=1")
        assert result.exit_code == 0, result.output
        assert (project / "runs" / expected / "model.json").exists()
        assert f"runs/{expected}" in result.output


def test_explicit_out_is_not_overwritten_without_force(project, trained):
    before = (trained / "model.npz").read_bytes()
    result = run("fit", project / "iris.yaml", "--out", trained, "--set", "seed=5")
    assert result.exit_code == 2
    assert "already holds a run; pass --force" in result.output
    assert (trained / "model.npz").read_bytes() == before
    result = run("fit", project / "iris.yaml", "--out", trained, "--set", "seed=5", "--force", "--quiet")
    assert result.exit_code == 0
    assert (trained / "model.npz").read_bytes() != before


def test_eval_table_and_json(project, trained):
    result = run("eval", trained, project / "iris.csv", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert {"loss", "accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro"} <= set(metrics)
    assert metrics["accuracy"] > 0.85
    labels = ["setosa", "versicolor", "virginica"]
    assert metrics["class_labels"] == labels
    assert set(metrics["precision"]) == set(metrics["recall"]) == set(metrics["f1"]) == set(labels)
    assert metrics["support"] == {"setosa": 50, "versicolor": 50, "virginica": 50}
    matrix = metrics["confusion_matrix"]
    assert [sum(row) for row in matrix] == [50, 50, 50]
    assert sum(matrix[i][i] for i in range(3)) / 150 == pytest.approx(metrics["accuracy"])
    assert "roc_auc" not in metrics  # three classes
    table = run("eval", trained, project / "iris.csv")
    assert table.exit_code == 0
    for text in ("accuracy", "loss", "per class", "confusion matrix", "versicolor"):
        assert text in table.output


def test_predict_rows_in_order_with_probabilities(project, trained, tmp_path):
    source = list(csv.DictReader(open(project / "iris.csv")))
    result = run("predict", trained, project / "iris.csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert len(rows) == len(source)
    assert list(rows[0]) == ["species", "prob_setosa", "prob_versicolor", "prob_virginica"]
    probabilities = np.array([[float(row[k]) for k in list(row)[1:]] for row in rows])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    agreement = np.mean([p["species"] == s["species"] for p, s in zip(rows, source)])
    assert agreement > 0.85
    out = tmp_path / "predictions.csv"
    assert run("predict", trained, project / "iris.csv", "--out", out).exit_code == 0
    assert out.read_text() == result.output


def test_predict_without_target_and_with_extra_columns(project, trained):
    lines = (project / "iris.csv").read_text().splitlines()
    reordered = ["note,petal_width,petal_length,sepal_width,sepal_length"]
    for line in lines[1:6]:
        a, b, c, d, _ = line.split(",")
        reordered.append(f"hello,{d},{c},{b},{a}")
    (project / "unlabelled.csv").write_text("\n".join(reordered) + "\n")
    result = run("predict", trained, project / "unlabelled.csv")
    assert result.exit_code == 0, result.output
    expected = run("predict", trained, project / "iris.csv").output.splitlines()[:6]
    assert result.output.splitlines() == expected


def test_predict_missing_feature_column_is_named(project, trained):
    (project / "partial.csv").write_text("sepal_length,sepal_width,petal_length\n5.1,3.5,1.4\n")
    result = run("predict", trained, project / "partial.csv")
    assert result.exit_code == 2
    assert "feature column 'petal_width' not found" in result.output
    assert "Traceback" not in result.output


def test_bad_cell_names_file_line_column_and_value(project):
    text = (project / "iris.csv").read_text().splitlines()
    text[4] = "4.6,3.1,oops,0.2,setosa"
    text[7] = "5.0,3.4,1.5,,setosa"
    (project / "iris.csv").write_text("\n".join(text) + "\n")
    result = run("fit", project / "iris.yaml", "--out", project / "run")
    assert result.exit_code == 2
    assert "iris.csv:5: column 'petal_length' has 'oops', which is not a number" in result.output
    (project / "iris.csv").write_text("\n".join(text[:4] + text[5:]) + "\n")
    result = run("fit", project / "iris.yaml", "--out", project / "run")
    assert result.exit_code == 2
    assert "iris.csv:7: column 'petal_width' is empty (a missing value)" in result.output


def test_bad_config_exits_2_with_one_message(project):
    (project / "bad.yaml").write_text(
        "name: iris\ndata: {train: iris.csv, target: species}\nmodel:\n  layers:\n    - {units: -3}\n"
    )
    result = run("check", project / "bad.yaml")
    assert result.exit_code == 2
    assert "bad.yaml:5:15: model.layers[0].units: must be > 0 (got -3)" in result.output
    assert "Traceback" not in result.output


def test_check_prints_resolved_config_and_summary(project):
    result = run("check", project / "iris.yaml")
    assert result.exit_code == 0, result.output
    assert "loss: cross_entropy" in result.output
    assert "activation: softmax" in result.output
    assert "dense_0" in result.output and "(None, 8)" in result.output
    assert "67" in result.output  # 4*8+8 + 8*3+3 parameters
    assert "config OK" in result.output


def test_eval_refuses_tampered_weights(project, trained):
    payload = bytearray((trained / "model.npz").read_bytes())
    payload[-20] ^= 0xFF
    (trained / "model.npz").write_bytes(bytes(payload))
    result = run("eval", trained, project / "iris.csv")
    assert result.exit_code == 2
    assert "checksum mismatch" in result.output


def test_eval_on_a_folder_without_a_run(project):
    result = run("eval", project, project / "iris.csv")
    assert result.exit_code == 2
    assert "does not hold a finished run" in result.output


def test_eval_unknown_class_label(project, trained):
    (project / "odd.csv").write_text(
        "sepal_length,sepal_width,petal_length,petal_width,species\n5.1,3.5,1.4,0.2,setosa\n5.0,3.0,1.0,0.1,rosa\n"
    )
    result = run("eval", trained, project / "odd.csv")
    assert result.exit_code == 2
    assert "odd.csv:3: target 'species' has class 'rosa', which training never saw" in result.output


def test_unknown_option_is_a_usage_error(project):
    result = run("fit", project / "iris.yaml", "--epochs", "3")
    assert result.exit_code == 2
    assert "No such option" in result.output


# Found by a user review: labels that look like rich markup, unwritable outputs, NaN in JSON.


@pytest.fixture
def markup_run(tmp_path):
    rows = "".join(f"{i},{'[b]x[/b]' if i % 2 else '[/]'}\n" for i in range(1, 21))
    (tmp_path / "labels.csv").write_text("a,y\n" + rows)
    (tmp_path / "c.yaml").write_text(
        "name: m\ndata: {train: labels.csv, target: y, validation: 0}\ntrain: {epochs: 2}\n"
    )
    result = run("fit", tmp_path / "c.yaml", "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    return tmp_path


def test_labels_that_look_like_markup_are_printed_as_written(markup_run):
    result = run("eval", markup_run / "run", markup_run / "labels.csv")
    assert result.exit_code == 0, result.output
    assert "[b]x[/b]" in result.output and "[/]" in result.output


def test_writing_onto_a_folder_or_through_a_file_is_a_clear_error(markup_run):
    (markup_run / "notes").write_text("a file, not a folder")
    for target, message in [
        (markup_run / "notes" / "p.csv", "notes: is a file, not a folder; choose another --out"),
        (markup_run / "run", "is a folder"),
    ]:
        result = run("predict", markup_run / "run", markup_run / "labels.csv", "--out", target)
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output


def test_eval_json_writes_null_for_undefined_metrics(markup_run):
    (markup_run / "one_class.csv").write_text("a,y\n1,[/]\n2,[/]\n")
    result = run("eval", markup_run / "run", markup_run / "one_class.csv", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))
    assert metrics["roc_auc"] is None


def test_every_out_file_gets_its_missing_folders_as_fit_does(project, trained):
    cases = {
        "predict": [trained, project / "iris.csv"],
        "plot": [trained],
        "export": [trained],
        "init": [project / "iris.csv", "--target", "species"],
    }
    names = {"predict": "p.csv", "plot": "curves.svg", "export": "model.onnx", "init": "c.yaml"}
    for command, arguments in cases.items():
        out = project / "new" / command / "deeper" / names[command]
        result = run(command, *arguments, "--out", out)
        assert result.exit_code == 0, (command, result.output)
        assert out.is_file() and out.stat().st_size > 0, command
    refused = run("plot", trained, "--out", project / "elsewhere" / "curves.gif")
    assert refused.exit_code == 2 and not (project / "elsewhere").exists()  # nothing is made for a refused command


def test_a_study_folder_given_for_a_run_points_at_its_best_run(project, trained):
    study = project / "iris-tune"  # what dltrain tune leaves: its files, and best/ trained from best.yaml
    study.mkdir()
    for name in ("study.json", "trials.csv", "best.yaml", "journal.log"):
        (study / name).write_text("")
    shutil.copytree(trained, study / "best")
    for command in (["eval"], ["predict"], ["explain"]):
        result = run(*command, study, project / "iris.csv")
        assert result.exit_code == 2, result.output
        assert f"{study} is a study folder of dltrain tune" in result.output
        assert f"is the run folder {study / 'best'}: give that instead" in result.output
    assert run("export", study).exit_code == 2
    shutil.rmtree(study / "best")
    result = run("eval", study, project / "iris.csv")
    assert result.exit_code == 2 and f"dltrain fit {study / 'best.yaml'}" in result.output


@pytest.fixture
def two_targets(tmp_path):
    """Two regression targets in very different units, and rows whose targets are empty (skipped)."""
    tmp_path = tmp_path / "prices"
    tmp_path.mkdir()
    rng = np.random.default_rng(0)
    lines = ["x1,x2,price,share"]
    for index in range(60):
        x1, x2 = rng.normal(size=2)
        price = "" if index in (7, 31) else f"{1000 + 300 * x1 + rng.normal() * 50:.2f}"
        share = "" if index == 31 else f"{0.5 + 0.01 * x2:.5f}"
        lines.append(f"{x1:.4f},{x2:.4f},{price},{share}")
    (tmp_path / "prices.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "prices.yaml").write_text(
        "name: prices\ndata:\n  train: prices.csv\n  target: [price, share]\n  validation: 0.2\n"
        "  columns: {price: {missing: drop}, share: {missing: drop}}\n"
        "model: {layers: [{units: 8, activation: tanh}]}\ntrain: {epochs: 5, batch_size: 16}\n"
    )
    assert run("fit", tmp_path / "prices.yaml", "--out", tmp_path / "run", "--quiet").exit_code == 0
    return tmp_path


def test_eval_counts_the_rows_it_scored_and_skipped_and_scores_each_target(two_targets):
    result = run("eval", two_targets / "run", two_targets / "prices.csv", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    # Rows 7 and 31 (file lines 9 and 33) have an empty target: skipped, as in training, and said.
    assert (metrics["rows_scored"], metrics["rows_skipped"], metrics["rows_skipped_empty_target"]) == (58, 2, 2)
    assert metrics["skipped_lines"] == [9, 33]
    truth = list(csv.DictReader(open(two_targets / "prices.csv")))
    predictions = run("predict", two_targets / "run", two_targets / "prices.csv").output
    predicted = list(csv.DictReader(io.StringIO(predictions)))
    kept = [index for index, row in enumerate(truth) if row["price"] and row["share"]]
    for target in ("price", "share"):
        errors = np.array([float(predicted[i][target]) - float(truth[i][target]) for i in kept])
        assert metrics["per_target"][target]["mse"] == pytest.approx(np.mean(errors**2), rel=1e-4)
        assert metrics["per_target"][target]["mae"] == pytest.approx(np.mean(np.abs(errors)), rel=1e-4)
    for name in ("mse", "rmse", "mae", "r2"):  # the plain figures are the means over the targets
        assert metrics[name] == pytest.approx(np.mean([metrics["per_target"][t][name] for t in ("price", "share")]))
    table = " ".join(run("eval", two_targets / "run", two_targets / "prices.csv").output.split())
    assert "rows scored │ 58" in table and "rows skipped │ 2" in table
    assert "skipped 2 of 60 rows with an empty target, as in training (missing: drop); lines 9, 33" in table
    assert "per target" in table and "means over the 2 targets" in table


def test_predict_keeps_the_target_beside_the_prediction(project, trained, two_targets):
    plain = list(csv.reader(io.StringIO(run("predict", trained, project / "iris.csv").output)))
    result = run("predict", trained, project / "iris.csv", "--keep", "species")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.output)))
    assert rows[0] == ["species", "predicted_species", "prob_setosa", "prob_versicolor", "prob_virginica"]
    truth = [row["species"] for row in csv.DictReader(open(project / "iris.csv"))]
    assert [row[0] for row in rows[1:]] == truth  # the kept column as written
    assert [row[1:] for row in rows[1:]] == plain[1:]  # the predictions as without --keep
    # Only a clashing prediction column is renamed: one of two regression targets here.
    header = run("predict", two_targets / "run", two_targets / "prices.csv", "--keep", "share").output.splitlines()[0]
    assert header == "share,price,predicted_share"
    # A kept column already named predicted_<target> leaves no name for the prediction.
    (project / "both.csv").write_text(
        "sepal_length,sepal_width,petal_length,petal_width,species,predicted_species\n5.1,3.5,1.4,0.2,setosa,x\n"
    )
    clash = run("predict", trained, project / "both.csv", "--keep", "species", "--keep", "predicted_species")
    assert clash.exit_code == 2 and "--keep predicted_species: the predictions have a column" in clash.output


def test_eval_and_predict_read_a_file_in_the_runs_training_encoding_and_say_so(tmp_path):
    rows = ["name,size,colour"] + [f"café{i},{i % 7 / 3:.3f},{['rouge', 'grège'][i % 2]}" for i in range(24)]
    (tmp_path / "latin.csv").write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    (tmp_path / "c.yaml").write_text(
        "name: latin\ndata: {train: latin.csv, target: colour, encoding: latin-1, exclude: [name], validation: 0}\n"
        "train: {epochs: 2}\n"
    )
    assert run("fit", tmp_path / "c.yaml", "--out", tmp_path / "run", "--quiet").exit_code == 0
    note = f"note: {tmp_path / 'latin.csv'} is not UTF-8 text; reading it as latin-1, the encoding the run was"
    predicted = run("predict", tmp_path / "run", tmp_path / "latin.csv", "--keep", "name")
    assert predicted.exit_code == 0, predicted.output
    assert note in " ".join(predicted.stderr.split())
    assert [line.split(",")[0] for line in predicted.stdout.splitlines()[1:3]] == ["café0", "café1"]
    evaluated = run("eval", tmp_path / "run", tmp_path / "latin.csv", "--json")
    assert evaluated.exit_code == 0 and json.loads(evaluated.stdout)["rows_scored"] == 24
    assert note in " ".join(evaluated.stderr.split())
    # --encoding still decides, and a UTF-8 file is read as UTF-8 without a note.
    assert run("predict", tmp_path / "run", tmp_path / "latin.csv", "--encoding", "utf-8").exit_code == 2
    (tmp_path / "utf8.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    plain = run("predict", tmp_path / "run", tmp_path / "utf8.csv", "--keep", "name")
    assert plain.exit_code == 0 and plain.stderr == "" and plain.stdout == predicted.stdout
