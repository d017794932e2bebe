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
