"""Issue 10's defaults and messages: schedules, activations, target scaling, init, task guess,
did-you-mean, command-line hints, and the peers' conveniences."""

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dltrain import workflow
from dltrain.cli import app
from dltrain.errors import DltrainError
from dltrain.schedules import make_schedule
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
    workflow.fit(config, out=tmp_path / "straight")
    with pytest.raises(DltrainError, match="interrupted"):
        workflow.fit(config, out=tmp_path / "resumed", callbacks=_StopAfter(2))
    workflow.fit(config, out=tmp_path / "resumed", resume=True)
    assert (tmp_path / "straight" / "model.npz").read_bytes() == (tmp_path / "resumed" / "model.npz").read_bytes()


# ---------------------------------------------------------------- gelu


def test_erf_matches_math_erf_in_float64_and_float32():
    from dltrain.activations import erf
    points = np.concatenate([np.linspace(-8, 8, 4001), [0.0, 1e-30, -1e-12, 1e30, -np.inf, np.inf]])
    expected = np.array([math.erf(x) for x in points])
    np.testing.assert_allclose(erf(points), expected, rtol=0, atol=5e-14)
    assert np.all(np.abs(erf(points[1:4001]) - expected[1:4001]) <= 5e-14)
    single = erf(points.astype(np.float32))
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, expected, rtol=0, atol=3e-7)


def test_gelu_is_exact_and_gelu_tanh_is_the_approximation():
    from dltrain.activations import ACTIVATIONS
    z = np.linspace(-6, 6, 241)
    exact = np.array([x * 0.5 * (1 + math.erf(x / math.sqrt(2))) for x in z])
    tanh_form = 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))
    np.testing.assert_allclose(ACTIVATIONS["gelu"].forward(z, np.empty_like(z)), exact, rtol=0, atol=5e-14)
    np.testing.assert_allclose(ACTIVATIONS["gelu_tanh"].forward(z, np.empty_like(z)), tanh_form, rtol=1e-13)
    # torch.nn.functional.gelu(torch.tensor(1.0)) = 0.8413447, approximate="tanh": 0.8411920
    assert ACTIVATIONS["gelu"].forward(np.ones(1), np.empty(1))[0] == pytest.approx(0.8413447460685429)
    assert ACTIVATIONS["gelu_tanh"].forward(np.ones(1), np.empty(1))[0] == pytest.approx(0.8411919906082768)


def test_a_run_saved_when_gelu_meant_the_tanh_form_predicts_as_before(tmp_path, root):
    config = _digits_config(tmp_path, root, "{name: adam, lr: 0.003}", 2)
    out = tmp_path / "run"
    workflow.fit(config, ["model.layers=[{units: 16, activation: gelu_tanh}]"], out=out)
    data = root / "data" / "digits.csv"
    before = workflow.predict_rows(out, data)
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["gelu"] == "exact"
    # What an older dltrain wrote: the tanh form under the name gelu, and no marker.
    del manifest["gelu"]
    manifest["config"]["model"]["layers"][0]["activation"] = "gelu"
    (out / "model.json").write_text(json.dumps(manifest))
    assert workflow.load_run(out).config.model.layers[0].activation == "gelu_tanh"
    assert workflow.predict_rows(out, data) == before
    # The same weights read as exact gelu give other probabilities: the mapping matters.
    manifest["gelu"] = "exact"
    (out / "model.json").write_text(json.dumps(manifest))
    assert workflow.predict_rows(out, data) != before
