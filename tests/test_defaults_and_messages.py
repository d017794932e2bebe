"""Issue 10's defaults and messages: schedules, activations, target scaling, init, task guess,
did-you-mean, command-line hints, and the peers' conveniences."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import dltrain
from dltrain.cli import app
from dltrain.commands import check, evaluate, fit, predict
from dltrain.engine.schedules import make_schedule
from dltrain.errors import DltrainError
from dltrain.train import Callbacks

runner = CliRunner()

DIGITS_SMALL = """name: small
data: {{train: {data}, target: digit, validation: 0.2}}
model: {{layers: [{{units: 16}}]}}
optimizer: {optimizer}
train: {{epochs: {epochs}, batch_size: 64, shuffle: true}}
"""


def _digits_config(tmp_path, root, optimizer, epochs):
    path = tmp_path / "c.yaml"
    path.write_text(DIGITS_SMALL.format(data=root / "data" / "digits.csv", optimizer=optimizer, epochs=epochs))
    return path


# ---------------------------------------------------------------- cosine schedule


def test_cosine_never_spends_an_epoch_at_min_lr():
    schedule = make_schedule("cosine", 0.1, 10, min_lr=0.0)
    rates = [schedule.lr(epoch) for epoch in range(1, 11)]
    assert rates[0] == 0.1
    assert min(rates) > 0.0
    # torch.optim.lr_scheduler.CosineAnnealingLR(T_max=10), epochs 1..10 (t = 0..9).
    assert rates == pytest.approx([0.05 * (1 + math.cos(math.pi * t / 10)) for t in range(10)], abs=1e-15)


class _StopAfter(Callbacks):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, epoch, record):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_cosine_resume_after_an_interruption_is_bit_identical(tmp_path, root):
    config = _digits_config(tmp_path, root, "{name: adam, lr: 0.003, schedule: {name: cosine, min_lr: 0.0001}}", 4)
    fit.fit(config, out=tmp_path / "straight")
    with pytest.raises(DltrainError, match="interrupted"):
        fit.fit(config, out=tmp_path / "resumed", callbacks=_StopAfter(2))
    fit.fit(config, out=tmp_path / "resumed", resume=True)
    assert (tmp_path / "straight" / "model.npz").read_bytes() == (tmp_path / "resumed" / "model.npz").read_bytes()


# ---------------------------------------------------------------- gelu


def test_erf_matches_math_erf_in_float64_and_float32():
    from dltrain.engine.activations import erf

    points = np.concatenate([np.linspace(-8, 8, 4001), [0.0, 1e-30, -1e-12, 1e30, -np.inf, np.inf]])
    expected = np.array([math.erf(x) for x in points])
    np.testing.assert_allclose(erf(points), expected, rtol=0, atol=5e-14)
    assert np.all(np.abs(erf(points[1:4001]) - expected[1:4001]) <= 5e-14)
    single = erf(points.astype(np.float32))
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, expected, rtol=0, atol=3e-7)


def test_gelu_is_exact_and_gelu_tanh_is_the_approximation():
    from dltrain.engine.activations import ACTIVATIONS

    z = np.linspace(-6, 6, 241)
    exact = np.array([x * 0.5 * (1 + math.erf(x / math.sqrt(2))) for x in z])
    tanh_form = 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))
    np.testing.assert_allclose(ACTIVATIONS["gelu"].forward(z), exact, rtol=0, atol=5e-14)
    np.testing.assert_allclose(ACTIVATIONS["gelu_tanh"].forward(z), tanh_form, rtol=1e-13)
    # torch.nn.functional.gelu(torch.tensor(1.0)) = 0.8413447, approximate="tanh": 0.8411920
    assert ACTIVATIONS["gelu"].forward(np.ones(1))[0] == pytest.approx(0.8413447460685429)
    assert ACTIVATIONS["gelu_tanh"].forward(np.ones(1))[0] == pytest.approx(0.8411919906082768)


def test_erf_uses_written_out_coefficients_equal_to_a_fresh_fit():
    from dltrain.engine.activations import erf, fit_erf

    x = np.concatenate([np.linspace(-8, 8, 4001), [-2.0, 1.9999999, 2.0, 2.0000001, 6.5, 6.5000001]])
    written = erf(x)
    np.testing.assert_allclose(written, erf(x, *fit_erf()), rtol=0, atol=1e-15)
    np.testing.assert_allclose(written, [math.erf(value) for value in x], rtol=0, atol=1e-13)
    assert erf(x.astype(np.float32)).dtype == np.float32
    # Importing the engine fits nothing: NumPy's polynomial package is never loaded.
    probe = "import sys, dltrain.engine.model; print(any(m.startswith('numpy.polynomial') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "False\n"


def test_a_run_saved_when_gelu_meant_the_tanh_form_predicts_as_before(tmp_path, root):
    config = _digits_config(tmp_path, root, "{name: adam, lr: 0.003}", 2)
    out = tmp_path / "run"
    fit.fit(config, ["model.layers=[{units: 16, activation: gelu_tanh}]"], out=out)
    data = root / "data" / "digits.csv"
    before = predict.predict_rows(out, data)
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["gelu"] == "exact"
    # What an older dltrain wrote: the tanh form under the name gelu, and no marker.
    del manifest["gelu"]
    manifest["config"]["model"]["layers"][0]["activation"] = "gelu"
    (out / "model.json").write_text(json.dumps(manifest))
    assert dltrain.load(out).config.model.layers[0].activation == "gelu_tanh"
    assert predict.predict_rows(out, data) == before
    # The same weights read as exact gelu give other probabilities: the mapping matters.
    manifest["gelu"] = "exact"
    (out / "model.json").write_text(json.dumps(manifest))
    assert predict.predict_rows(out, data) != before


# ---------------------------------------------------------------- regression targets scaled


def _minimal_regression(tmp_path, root, extra=""):
    path = tmp_path / "minimal.yaml"
    path.write_text(
        f"data: {{train: {root / 'data' / 'diabetes.csv'}, target: progression{extra}}}\n"
        "model: {layers: [{units: 16}]}\ntrain: {epochs: 50}\n"
    )
    return path


def test_a_minimal_regression_config_learns_because_targets_are_scaled(tmp_path, root):
    result = fit.fit(_minimal_regression(tmp_path, root), out=tmp_path / "run")
    validation = result.metrics["validation"]
    assert validation["r2"] > 0.1  # -3.0 with data.target_scale: none
    # Reported metrics are in the target's units: MSE is the scaled loss times the variance.
    manifest = json.loads((tmp_path / "run" / "model.json").read_text())
    scaler = manifest["data"]["target_scaler"]
    assert scaler["method"] == "standard" and 100 < scaler["offset"][0] < 200 and 50 < scaler["divisor"][0] < 100
    assert validation["mse"] == pytest.approx(validation["loss"] * scaler["divisor"][0] ** 2, rel=1e-4)
    assert result.history[-1]["val_mse"] == pytest.approx(validation["mse"], rel=1e-4)
    evaluated, _ = evaluate.evaluate_run(tmp_path / "run", root / "data" / "diabetes.csv")
    assert 1000 < evaluated["mse"] < 6000
    header, rows = predict.predict_rows(tmp_path / "run", root / "data" / "diabetes.csv")
    predicted = np.array([float(row[0]) for row in rows])
    assert header == ["progression"] and 100 < predicted.mean() < 200


def test_target_scale_none_and_a_run_saved_before_target_scaling(tmp_path, root):
    config = _minimal_regression(tmp_path, root, ", target_scale: none")
    fit.fit(config, ["train.epochs=2"], out=tmp_path / "run")
    before = predict.predict_rows(tmp_path / "run", root / "data" / "diabetes.csv")
    manifest_path = tmp_path / "run" / "model.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["data"]["target_scaler"] == {"method": "none", "offset": None, "divisor": None}
    del manifest["data"]["target_scaler"], manifest["config"]["data"]["target_scale"]
    manifest_path.write_text(json.dumps(manifest))
    run = dltrain.load(tmp_path / "run")
    assert run.config.data.target_scale == "none" and run.schema.target_divisor is None
    assert predict.predict_rows(tmp_path / "run", root / "data" / "diabetes.csv") == before


def test_multi_target_regression_scales_each_target(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    lines = ["x,weight,waist"] + [f"{v:.4f},{180 + 20 * v:.3f},{0.01 * v + 35:.5f}" for v in x]
    (tmp_path / "body.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "body.yaml").write_text(
        "data: {train: body.csv, target: [weight, waist]}\n"
        "model: {layers: [{units: 8}]}\noptimizer: {lr: 0.01}\ntrain: {epochs: 60}\n"
    )
    result = fit.fit(tmp_path / "body.yaml", out=tmp_path / "run")
    assert result.metrics["validation"]["r2"] > 0.9
    divisor = json.loads((tmp_path / "run" / "model.json").read_text())["data"]["target_scaler"]["divisor"]
    assert divisor[0] == pytest.approx(20, rel=0.2) and divisor[1] == pytest.approx(0.01, rel=0.2)


# ---------------------------------------------------------------- task guess and splits


def test_few_rows_per_integer_value_make_a_regression_not_16_classes(tmp_path):
    from dltrain.data import infer_task

    assert infer_task(np.array([float(v % 16) for v in range(20)])) == "regression"
    assert infer_task(np.array([float(v % 3) for v in range(20)])) == "classification"
    assert infer_task(np.array([0.0, 1.0, 1.0])) == "classification"  # two values: always classes
    assert infer_task(np.array(["a", "b", "c"])) == "classification"  # text cannot be a quantity
    lines = ["x,score"] + [f"{v * 0.1:.1f},{(v * 7) % 16}" for v in range(20)]
    (tmp_path / "scores.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "scores.yaml").write_text("data: {train: scores.csv, target: score}\n")
    assert check.check(tmp_path / "scores.yaml").config.task == "regression"


def test_a_class_with_one_row_or_an_empty_validation_split_is_a_clear_message(tmp_path):
    lines = ["x,kind"] + [f"{v},{'rare' if v == 0 else 'common' if v % 2 else 'usual'}" for v in range(30)]
    (tmp_path / "kinds.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "kinds.yaml").write_text("data: {train: kinds.csv, target: kind}\n")
    with pytest.raises(
        DltrainError, match="class 'rare' has only 1 row; a stratified validation split needs"
    ) as raised:
        check.check(tmp_path / "kinds.yaml")
    assert "task: regression" not in str(raised.value)  # text is never a quantity
    # Numbers taken for classes (task: auto): they may be a quantity after all.
    lines = ["x,grade"] + [f"{v},{7 if v == 0 else v % 3}" for v in range(30)]
    (tmp_path / "grades.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "grades.yaml").write_text("data: {train: grades.csv, target: grade}\n")
    with pytest.raises(
        DltrainError, match="class '7' has only 1 row.*, set task: regression if the target is a quantity"
    ):
        check.check(tmp_path / "grades.yaml")
    check.check(tmp_path / "kinds.yaml", ["data.validation=0"])  # no split, no problem
    (tmp_path / "pairs.csv").write_text("x,kind\n1,a\n2,a\n3,b\n4,b\n5,c\n6,c\n")
    (tmp_path / "pairs.yaml").write_text("data: {train: pairs.csv, target: kind, validation: 0.2}\n")
    result = runner.invoke(app, ["check", str(tmp_path / "pairs.yaml")])
    assert result.exit_code == 2
    assert "pairs.yaml:1:52: data.validation: 0.2 of 6 rows leaves no validation rows" in result.output


# ---------------------------------------------------------------- init's early stopping, fit's warning


@pytest.mark.parametrize("data,patience", [("iris", 20), ("digits", 6)])
def test_init_writes_early_stopping_with_a_patience_sized_to_the_data(tmp_path, root, data, patience):
    target = {"iris": "species", "digits": "digit"}[data]
    result = runner.invoke(
        app, ["init", str(root / "data" / f"{data}.csv"), "--target", target, "--out", str(tmp_path / "c.yaml")]
    )
    assert result.exit_code == 0, result.output
    config = check.check(tmp_path / "c.yaml").config
    stopping = config.train.early_stopping
    assert stopping.restore_best is True and stopping.monitor == "val_loss" and stopping.patience == patience


def _summary(history, monitor, stopping):
    from types import SimpleNamespace

    from dltrain.report import fit_summary

    config = SimpleNamespace(name="x", train=SimpleNamespace(early_stopping=stopping))
    best = min(range(len(history)), key=lambda index: history[index][monitor]) + 1
    result = SimpleNamespace(
        config=config, history=history, stop_reason="epochs done", best_epoch=best, monitor=monitor
    )
    return "\n".join(fit_summary(result))


def test_fit_summary_warns_when_the_saved_epoch_is_far_worse_than_the_best():
    from types import SimpleNamespace

    history = [{"epoch": e, "loss": 1.0, "val_loss": v} for e, v in enumerate([1.0, 0.5, 0.52, 0.9], start=1)]
    summary = _summary(history, "val_loss", None)
    assert (
        "warning: the saved model is epoch 4's (val_loss 0.9000), far worse than epoch 2's; "
        "set train.early_stopping: {monitor: val_loss, restore_best: true} to keep the best epoch"
    ) in summary
    off = SimpleNamespace(restore_best=False)
    assert "set train.early_stopping.restore_best: true" in _summary(history, "val_loss", off)
    assert "warning" not in _summary(history, "val_loss", SimpleNamespace(restore_best=True))
    close = [{"epoch": e, "loss": 1.0, "val_loss": v} for e, v in enumerate([1.0, 0.5, 0.52], start=1)]
    assert "warning" not in _summary(close, "val_loss", None)  # 4% worse is noise, not far worse


# ---------------------------------------------------------------- init with several targets


def test_init_with_two_targets_writes_multi_target_regression(tmp_path):
    rng = np.random.default_rng(1)
    lines = ["chins,situps,weight,waist"] + [
        f"{rng.integers(1, 20)},{rng.integers(50, 250)},{rng.normal(180, 20):.1f},{rng.normal(35, 3):.1f}"
        for _ in range(40)
    ]
    lines[5] = "3,100,,34.0"  # one weight is missing: that row is skipped
    (tmp_path / "body.csv").write_text("\n".join(lines) + "\n")
    result = runner.invoke(
        app,
        [
            "init",
            str(tmp_path / "body.csv"),
            "--target",
            "weight",
            "--target",
            "waist",
            "--out",
            str(tmp_path / "body.yaml"),
        ],
    )
    assert result.exit_code == 0, result.output
    text = (tmp_path / "body.yaml").read_text()
    assert "  target: [weight, waist]" in text and "multi-target regression" in text
    assert "weight: {missing: drop}" in text
    config = check.check(tmp_path / "body.yaml").config
    assert config.data.target == ["weight", "waist"] and config.task == "regression"
    (tmp_path / "mixed.csv").write_text("x,y,kind\n" + "".join(f"{v},{v * 2},k{v % 2}\n" for v in range(20)))
    mixed = runner.invoke(
        app,
        [
            "init",
            str(tmp_path / "mixed.csv"),
            "--target",
            "y",
            "--target",
            "kind",
            "--out",
            str(tmp_path / "mixed.yaml"),
        ],
    )
    assert mixed.exit_code == 2
    assert "several --target columns mean multi-target regression, but 'kind' holds text" in mixed.output
    twice = runner.invoke(app, ["init", str(tmp_path / "mixed.csv"), "--target", "y", "--target", "y"])
    assert twice.exit_code == 2 and "--target y is given twice" in twice.output


# ---------------------------------------------------------------- name and missing keys


def test_name_defaults_to_the_config_files_stem(tmp_path, root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my churn model.yaml").write_text(
        f"data: {{train: {root / 'data' / 'iris.csv'}, target: species}}\ntrain: {{epochs: 1}}\n"
    )
    result = runner.invoke(app, ["fit", "my churn model.yaml", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "my-churn-model" / "model.json").exists()
    assert check.check(tmp_path / "my churn model.yaml", ["name=other"]).config.name == "other"


# ---------------------------------------------------------------- did you mean


def test_did_you_mean_prefers_the_same_word_in_another_case():
    from dltrain.config import closest_match
    from dltrain.errors import did_you_mean

    assert closest_match is did_you_mean  # one function for keys, values and columns
    activations = ["elu", "gelu", "gelu_tanh", "leaky_relu", "linear", "relu", "sigmoid", "softplus", "tanh"]
    assert did_you_mean("Relu", activations) == " (did you mean 'relu'?)"  # was 'elu'
    assert did_you_mean("churned", ["Churned", "churn_date", "tenure"]) == " (did you mean 'Churned'?)"
    assert did_you_mean("Activaton", ["activation", "init"]) == " (did you mean 'activation'?)"
    assert did_you_mean("xyz", ["activation", "init"]) == ""
    assert did_you_mean("relu", ["relu"]) == ""


def test_a_column_in_the_wrong_case_is_suggested_in_every_column_message(tmp_path):
    (tmp_path / "c.csv").write_text("Tenure,Plan,Churned\n" + "".join(f"{v},p{v % 2},{v % 2}\n" for v in range(20)))
    (tmp_path / "c.yaml").write_text("data: {train: c.csv, target: Churned, exclude: [plan]}\n")
    with pytest.raises(DltrainError, match=r"column 'plan' is not in .*c.csv \(did you mean 'Plan'\?\)"):
        check.check(tmp_path / "c.yaml")
    result = runner.invoke(app, ["init", str(tmp_path / "c.csv"), "--target", "churned"])
    assert result.exit_code == 2 and "(did you mean 'Churned'?)" in result.output


# ---------------------------------------------------------------- output off a terminal


def test_log_lines_are_not_wrapped_at_80_columns_off_a_terminal(tmp_path, root):
    import os
    import subprocess
    import sys

    environment = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    out = tmp_path / ("run-with-a-long-name-" + "x" * 80)
    arguments = ["fit", str(root / "configs" / "diabetes.yaml"), "--out", str(out), "--set", "train.epochs=2"]
    completed = subprocess.run(
        [sys.executable, "-m", "dltrain", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch 1/2")]
    assert len(epoch_lines) == 1 and len(epoch_lines[0]) > 100 and "val_r2" in epoch_lines[0]
    assert f"run folder: {out}" in lines and f"saved {out}" in lines
    # model.json records how the run was made.
    from datetime import datetime

    run = json.loads((out / "model.json").read_text())["run"]
    assert run["command"] == ["dltrain", *arguments]
    started, ended = datetime.fromisoformat(run["started"]), datetime.fromisoformat(run["ended"])
    assert started <= ended and started.tzinfo is not None
    assert 0 < run["seconds"] < 120 and run["seconds"] <= (ended - started).total_seconds() + 1


# ---------------------------------------------------------------- predict --keep, one number format


def test_predict_keeps_id_columns_and_writes_one_number_format(tmp_path):
    from dltrain.predictions import format_number

    assert [format_number(v) for v in (0.5, 1.0, 0.0, 217.77785, 1 / 3, 2.5566e-11, 1e20)] == [
        "0.5",
        "1",
        "0",
        "217.77785",
        "0.33333334",
        "2.5566e-11",
        "1e+20",
    ]
    lines = ["customer_id,tenure,plan,churned"] + [
        f"C{index:04d},{index % 17},{'pro' if index % 3 else 'basic'},{'yes' if index % 17 > 8 else 'no'}"
        for index in range(60)
    ]
    (tmp_path / "c.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "c.yaml").write_text(
        "data: {train: c.csv, target: churned, exclude: [customer_id]}\ntrain: {epochs: 3}\n"
    )
    fit.fit(tmp_path / "c.yaml", out=tmp_path / "run")
    result = runner.invoke(
        app, ["predict", str(tmp_path / "run"), str(tmp_path / "c.csv"), "--keep", "customer_id", "--keep", "plan"]
    )
    assert result.exit_code == 0, result.output
    out = result.output.splitlines()
    assert out[0] == "customer_id,plan,churned,prob_no,prob_yes"
    assert out[1].startswith("C0000,basic,") and out[60].startswith("C0059,pro,") and len(out) == 61
    for line in out[1:]:
        probabilities = line.split(",")[3:]
        assert all(text == format_number(float(text)) for text in probabilities)
        assert sum(map(float, probabilities)) == pytest.approx(1.0, abs=1e-6)
    truth = runner.invoke(app, ["predict", str(tmp_path / "run"), str(tmp_path / "c.csv"), "--keep", "churned"])
    assert truth.exit_code == 0 and truth.output.splitlines()[0] == "churned,predicted_churned,prob_no,prob_yes"
    missing = runner.invoke(app, ["predict", str(tmp_path / "run"), str(tmp_path / "c.csv"), "--keep", "Customer_ID"])
    assert missing.exit_code == 2 and "(did you mean 'customer_id'?)" in missing.output


# ---------------------------------------------------------------- the peers' conveniences


def test_version_schema_and_completion(root):
    from dltrain import __version__

    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.splitlines()[0] == f"dltrain {__version__}"
    assert version.output.splitlines()[1].startswith("engine: ")  # which path runs (see test_kernels)
    schema = runner.invoke(app, ["schema"])
    assert schema.exit_code == 0
    document = json.loads(schema.output)
    assert document["required"] == ["data"]
    assert document["$defs"]["DataSpec"]["properties"]["target_scale"]["enum"] == ["standard", "none"]
    assert "gelu_tanh" in json.dumps(document["$defs"]["DenseSpec"])
    # The shipped copy the configs point at is the current one.
    assert json.loads((root / "configs" / "dltrain.schema.json").read_text()) == document
    for config in (root / "configs").glob("*.yaml"):
        assert config.read_text().startswith("# yaml-language-server: $schema=dltrain.schema.json\n"), config
    assert "--install-completion" in runner.invoke(app, ["--help"]).output


def test_help_texts_say_what_the_commands_do():
    plot_help = runner.invoke(app, ["plot", "--help"]).output
    assert "pip install '.[plot]'" in " ".join(plot_help.split())  # rich once took [plot] for markup
    eval_help = " ".join(runner.invoke(app, ["eval", "--help"]).output.split())
    assert "flat" not in eval_help and "nested" in eval_help
    predict_help = " ".join(runner.invoke(app, ["predict", "--help"]).output.split())
    assert "--keep" in predict_help
    init_help = " ".join(runner.invoke(app, ["init", "--help"]).output.split())
    assert "multi-target regression" in init_help
