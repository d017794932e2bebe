"""Early stopping, schedules, regularisation, exact resume, Ctrl-C, divergence, metrics, plots."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

import dltrain
from dltrain import build
from dltrain.cli import app
from dltrain.commands import check, fit
from dltrain.engine import kernels, threads
from dltrain.engine.optimizers import make_optimizer
from dltrain.engine.schedules import make_schedule
from dltrain.errors import ConfigError, TrainingDiverged

runner = CliRunner()

DIGITS_SMALL = """name: digits
seed: 3
data: {{train: {data}, target: digit, validation: 0.25, scale: minmax}}
model:
  layers:
    - {{units: 32, activation: relu}}
    - {{type: dropout, rate: 0.2}}
optimizer: {optimizer}
train: {{epochs: {epochs}, batch_size: 64, shuffle: true}}
"""


def _config(tmp_path, root, optimizer, epochs, name="c.yaml"):
    path = tmp_path / name
    path.write_text(DIGITS_SMALL.format(data=root / "data" / "digits.csv", optimizer=optimizer, epochs=epochs))
    return path


@pytest.mark.parametrize(
    "optimizer",
    [
        "{name: sgd, lr: 0.05, momentum: 0.9, nesterov: true}",
        "{name: adam, lr: 0.003, weight_decay: 0.01, schedule: {name: step, every: 2, factor: 0.5}}",
    ],
)
@pytest.mark.parametrize("path", ["reference", "fused"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, root, optimizer, path, monkeypatch):
    if path == "fused":
        if not kernels.active():
            pytest.skip("numba not installed")
        monkeypatch.setattr(threads, "FUSED_MIN_MACS", 1)  # this small net takes the fused path too
        monkeypatch.setattr(kernels, "PARALLEL_MIN_ELEMENTS", 0)
    config = _config(tmp_path, root, optimizer, epochs=5)
    straight = fit.fit(config, out=tmp_path / "straight")
    first = fit.fit(config, ["train.epochs=2"], out=tmp_path / "resumed")
    assert len(first.history) == 2
    resumed = fit.fit(config, out=tmp_path / "resumed", resume=True)
    assert resumed.resumed_from == 2
    assert (tmp_path / "straight" / "model.npz").read_bytes() == (tmp_path / "resumed" / "model.npz").read_bytes()
    straight_history = [{k: v for k, v in row.items() if k != "seconds"} for row in straight.history]
    resumed_history = [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history]
    assert straight_history == resumed_history


def test_resume_refuses_a_changed_config_and_names_the_keys(tmp_path, root):
    config = _config(tmp_path, root, "{name: adam, lr: 0.003}", epochs=2)
    fit.fit(config, out=tmp_path / "run")
    with pytest.raises(ConfigError) as caught:
        fit.fit(
            config,
            ["optimizer.lr=0.01", "model.layers[0].units=16", "train.epochs=4"],
            out=tmp_path / "run",
            resume=True,
        )
    message = str(caught.value)
    assert "optimizer.lr: 0.003 -> 0.01" in message
    assert "model.layers" in message and "train.epochs" not in message.split("Only")[0]
    with pytest.raises(
        ConfigError,
        match=r"already finished \(all 2 epochs done\); the model is untouched. "
        r"To train on anyway: .* --resume --set train.epochs=4",
    ):
        fit.fit(config, out=tmp_path / "run", resume=True)
    # epochs and early stopping may change
    result = fit.fit(
        config, ["train.epochs=3", "train.early_stopping={patience: 5}"], out=tmp_path / "run", resume=True
    )
    assert len(result.history) == 3


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, root):
    result = runner.invoke(
        app, ["fit", str(_config(tmp_path, root, "{name: adam}", 2)), "--out", str(tmp_path / "empty"), "--resume"]
    )
    assert result.exit_code == 2
    assert "no checkpoint to resume from" in result.output


@pytest.mark.parametrize("old_format", [1, 2])
def test_resume_refuses_a_checkpoint_in_an_earlier_format(tmp_path, root, old_format):
    # Format 1 stored Adam's moments as averages, format 2 as decayed sums over two halves
    # of all parameters; resuming from either must be refused in words, never continued
    # with misread moments.
    config = _config(tmp_path, root, "{name: adam}", 2)
    fit.fit(config, ["train.epochs=1"], out=tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoint.npz"
    with np.load(checkpoint, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(str(arrays["meta.json"]))
    meta["format_version"] = old_format
    arrays["meta.json"] = np.array(json.dumps(meta))
    np.savez(checkpoint, **arrays)
    result = runner.invoke(app, ["fit", str(config), "--out", str(tmp_path / "run"), "--resume"])
    assert result.exit_code == 2
    assert f"checkpoint format version {old_format} is not supported" in result.output
    assert "train again without --resume" in result.output


def test_early_stopping_restores_the_best_weights(tmp_path, root):
    config = _config(tmp_path, root, "{name: adam, lr: 0.05}", epochs=60)
    result = fit.fit(config, ["train.early_stopping={monitor: val_loss, patience: 3}"], out=tmp_path / "run")
    assert result.stop_reason == "early stop: no val_loss improvement for 3 epochs"
    assert len(result.history) == result.best_epoch + 3 < 60
    best = result.history[result.best_epoch - 1]
    assert best["val_loss"] == min(row["val_loss"] for row in result.history)
    assert result.metrics["validation"]["loss"] == pytest.approx(best["val_loss"], rel=1e-6)
    manifest = json.loads((tmp_path / "run" / "model.json").read_text())
    assert manifest["training"]["best_epoch"] == result.best_epoch


def test_early_stopping_monitor_can_be_a_metric_that_grows(tmp_path, root):
    config = _config(tmp_path, root, "{name: adam, lr: 0.01}", epochs=40)
    result = fit.fit(config, ["train.early_stopping={monitor: val_accuracy, patience: 2}"], out=tmp_path / "run")
    assert result.history[result.best_epoch - 1]["val_accuracy"] == max(r["val_accuracy"] for r in result.history)


def test_monitor_must_be_logged(tmp_path, root):
    config = _config(tmp_path, root, "{name: adam}", epochs=2)
    with pytest.raises(ConfigError, match=r"'val_acc' is not logged \(did you mean 'val_accuracy'\?\)"):
        check.check(config, ["train.early_stopping={monitor: val_acc}"])
    with pytest.raises(ConfigError, match="there is no validation data"):
        check.check(config, ["train.early_stopping={monitor: val_loss}", "data.validation=0"])


def test_tolerance_stops_when_converged(tmp_path, root):
    result = fit.fit(
        root / "configs" / "diabetes.yaml",
        ["model.layers=[]", "optimizer={name: gd, lr: 0.2}", "train.epochs=5000", "train.tolerance=1e-3"],
        out=tmp_path / "run",
    )
    assert result.stop_reason.startswith("converged")
    assert len(result.history) < 5000


@pytest.mark.parametrize(
    "name,options,expected",
    [
        ("constant", {}, {1: 0.1, 50: 0.1}),
        ("step", {"every": 10, "factor": 0.5}, {1: 0.1, 10: 0.1, 11: 0.05, 21: 0.025}),
        ("exponential", {"gamma": 0.9}, {1: 0.1, 2: 0.09, 4: 0.0729}),
        # PyTorch's CosineAnnealingLR(T_max=100): the last epoch still learns.
        (
            "cosine",
            {"min_lr": 0.0},
            {1: 0.1, 50: 0.05 * (1 + np.cos(np.pi * 49 / 100)), 100: 0.05 * (1 + np.cos(np.pi * 99 / 100))},
        ),
        ("cosine", {"min_lr": 0.01, "warmup_epochs": 2}, {3: 0.1, 12: 0.01 + 0.045 * (1 + np.cos(np.pi * 9 / 98))}),
        ("step", {"every": 10, "factor": 0.5, "warmup_epochs": 4}, {1: 0.02, 4: 0.08, 5: 0.1, 15: 0.05}),
    ],
)
def test_schedule_rates_at_given_epochs(name, options, expected):
    schedule = make_schedule(name, 0.1, 100, **options)
    for epoch, rate in expected.items():
        assert schedule.lr(epoch) == pytest.approx(rate, abs=1e-12)


def test_plateau_schedule_cuts_the_rate_after_patience():
    schedule = make_schedule("plateau", 0.1, 100, monitor="val_loss", factor=0.5, patience=2)
    for epoch, value in enumerate([1.0, 0.9, 0.95, 0.96, 0.97, 0.98], start=1):
        schedule.observe(epoch, {"val_loss": value})
    # No improvement after epoch 2: the rate halves after epochs 4 and 6.
    assert schedule.lr(7) == pytest.approx(0.025)


def test_history_records_the_learning_rate(tmp_path, root):
    config = _config(tmp_path, root, "{name: sgd, lr: 0.1, schedule: {name: exponential, gamma: 0.5}}", epochs=3)
    result = fit.fit(config, out=tmp_path / "run")
    assert [row["lr"] for row in result.history] == [0.1, 0.05, 0.025]
    assert (tmp_path / "run" / "history.csv").read_text().splitlines()[0].startswith("epoch,lr,loss")


def test_gradient_clipping_scales_to_the_global_norm():
    params = {"0.W": np.zeros((1, 2), np.float32), "0.b": np.zeros(1, np.float32)}
    grads = {"0.W": np.array([[3.0, 0.0]], np.float32), "0.b": np.array([4.0], np.float32)}
    make_optimizer("sgd", params, grads, lr=1.0, clip_norm=1.0).step()
    np.testing.assert_allclose(params["0.W"], [[-0.6, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(params["0.b"], [-0.8], rtol=1e-6)


def test_weight_decay_is_l2_for_sgd_and_decoupled_for_adam():
    params = {"0.W": np.array([[2.0]], np.float32), "0.b": np.array([2.0], np.float32)}
    grads = {"0.W": np.array([[0.0]], np.float32), "0.b": np.array([0.0], np.float32)}
    make_optimizer("sgd", params, grads, lr=0.1, weight_decay=0.5).step()
    assert params["0.W"][0, 0] == pytest.approx(2.0 - 0.1 * 0.5 * 2.0)
    assert params["0.b"][0] == 2.0  # biases are not decayed
    params = {"0.W": np.array([[2.0]], np.float32), "0.b": np.array([2.0], np.float32)}
    grads = {"0.W": np.array([[0.0]], np.float32), "0.b": np.array([0.0], np.float32)}
    make_optimizer("adam", params, grads, lr=0.1, weight_decay=0.5).step()
    assert params["0.W"][0, 0] == pytest.approx(2.0 * (1 - 0.1 * 0.5))


def test_balanced_class_weights(tmp_path, root):
    path = tmp_path / "c.yaml"
    path.write_text(
        f"name: bc\ndata: {{train: {root / 'data' / 'breast_cancer.csv'}, target: diagnosis}}\n"
        "train: {epochs: 2, class_weight: balanced}\n"
    )
    result = check.check(path)
    targets = result.data.train.in_memory().targets
    weights = build.sample_weights(result.config, result.data.schema, targets)
    classes = targets[:, 0].astype(int)
    counts = np.bincount(classes)
    assert weights[classes == 0][0] == pytest.approx(len(classes) / (2 * counts[0]))
    assert (weights * (classes == 1)).sum() == pytest.approx((weights * (classes == 0)).sum(), rel=1e-5)
    with pytest.raises(ConfigError, match="unknown class 'benin'; classes are benign, malignant"):
        check.check(path, ["train.class_weight={benin: 2.0}"])


def test_divergence_stops_with_a_message_and_keeps_the_last_good_epoch(tmp_path, root):
    overrides = [
        "model.layers=[]",
        "optimizer={name: gd, lr: 0.3}",
        "train.epochs=400",
        "data.validation=0",
        "train.early_stopping=null",
        "data.target_scale=none",
    ]
    with pytest.raises(TrainingDiverged) as caught:
        fit.fit(root / "configs" / "diabetes.yaml", overrides, out=tmp_path / "run")
    message = str(caught.value)
    assert "training diverged" in message and "at epoch" in message and "batch 1" in message
    assert "lower optimizer.lr" in message
    run = dltrain.load(tmp_path / "run")
    manifest = run.manifest
    assert manifest["training"]["stop_reason"] == "diverged"
    epoch = int(message.split("at epoch ")[1].split(",")[0])
    assert manifest["training"]["epochs_done"] == epoch - 1
    assert all(np.isfinite(value).all() for value in run.model.params.values())


def test_divergence_exit_code_through_the_cli(tmp_path, root):
    result = runner.invoke(
        app,
        [
            "fit",
            str(root / "configs" / "diabetes.yaml"),
            "--out",
            str(tmp_path / "run"),
            "--quiet",
            "--set",
            "optimizer={name: gd, lr: 0.3}",
            "--set",
            "model.layers=[]",
            "--set",
            "train.epochs=400",
            "--set",
            "data.target_scale=none",
            "--set",
            "train.early_stopping=null",
        ],
    )
    assert result.exit_code == 3
    assert "training diverged" in result.output and "Traceback" not in result.output


def test_ctrl_c_saves_the_last_epoch_and_exits_130(tmp_path, root):
    config = _config(tmp_path, root, "{name: adam, lr: 0.001}", epochs=100000)
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "dltrain", "fit", str(config), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (out / "checkpoint.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "--resume" in stderr and "interrupted" in stderr
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["training"]["stop_reason"] == "interrupted"
    done = manifest["training"]["epochs_done"]
    assert done >= 1
    evaluated = runner.invoke(app, ["eval", str(out), str(root / "data" / "digits.csv"), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["accuracy"] > 0.5
    resumed = fit.fit(config, [f"train.epochs={done + 1}"], out=out, resume=True)
    assert len(resumed.history) == done + 1


def test_logged_metrics_follow_train_metrics(tmp_path, root):
    config = _config(tmp_path, root, "{name: adam, lr: 0.01}", epochs=2)
    result = fit.fit(config, ["train.metrics=[balanced_accuracy, f1_macro]"], out=tmp_path / "run")
    assert set(result.history[0]) == {
        "epoch",
        "lr",
        "loss",
        "balanced_accuracy",
        "f1_macro",
        "val_loss",
        "val_balanced_accuracy",
        "val_f1_macro",
        "seconds",
    }
    with pytest.raises(ConfigError, match="r2 is not a classification metric"):
        check.check(config, ["train.metrics=[r2]"])


def test_plot_writes_a_png_that_is_not_blank(tmp_path, root):
    image = pytest.importorskip("matplotlib.image")
    config = _config(tmp_path, root, "{name: adam, lr: 0.01}", epochs=4)
    fit.fit(config, out=tmp_path / "run")
    result = runner.invoke(app, ["plot", str(tmp_path / "run"), "--out", str(tmp_path / "curves.png")])
    assert result.exit_code == 0, result.output
    png = tmp_path / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000
    pixels = image.imread(png)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 400
    assert pixels[..., :3].std() > 0.05  # lines and text, not one flat colour
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 20
    # The suffix picks the format; a suffix that names no image format is refused.
    for suffix, magic in ((".svg", b"<?xml"), (".pdf", b"%PDF")):
        result = runner.invoke(app, ["plot", str(tmp_path / "run"), "--out", str(tmp_path / f"curves{suffix}")])
        assert result.exit_code == 0, result.output
        assert (tmp_path / f"curves{suffix}").read_bytes().startswith(magic)
    result = runner.invoke(app, ["plot", str(tmp_path / "run"), "--out", str(tmp_path / "curves.txt")])
    assert result.exit_code == 2
    assert "end --out with .png, .svg or .pdf" in " ".join(result.output.split())
    assert not (tmp_path / "curves.txt").exists()
