"""`dltrain predict` writes its CSV a block of rows at a time, to stdout as it goes or to an --out
file that appears whole: the bytes are those of the whole file predicted at once
(``predictions_csv(*predict_rows(...))``), on awkward inputs and with blocks forced small."""

import datetime

import numpy as np
import pytest
from typer.testing import CliRunner

from dltrain import api, csv_text
from dltrain.cli import app
from dltrain.commands import predict
from dltrain.engine.model import Sequential

runner = CliRunner()
SMALL_BATCH = 8  # the engine's prediction batch, and a block of output, forced small in these tests


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A classifier on dates, a categorical column with a comma, a boolean, a numeric column with a
    marker (?) and empty cells; a regression of two targets; and the CSVs to predict."""
    folder = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(0)
    lines = ["id,when,size,colour,member,weight,label,price,volume"]
    for index in range(90):
        when = datetime.date(2020, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 900)))
        size = "?" if index % 17 == 0 else f"{rng.normal():.4f}"
        colour = ["red", "green", "blue", '"light, blue"'][index % 4]
        weight = "" if index % 13 == 0 else f"{rng.normal() * 100:.2f}"
        label = ["big", "small", 'say "mid"'][index % 3]
        label = f'"{label.replace(chr(34), chr(34) * 2)}"' if '"' in label else label
        lines.append(
            f"id{index},{when},{size},{colour},{'yes' if index % 2 else 'no'},{weight},{label},"
            f"{rng.normal() * 1e6:.1f},{rng.normal() * 1e-3:.6f}"
        )
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    (folder / "crlf.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    common = (
        "data:\n  train: train.csv\n  exclude: [id]\n  na_values: ['?']\n  columns:\n"
        "    size: {missing: mean}\n    weight: {missing: median}\n    colour: {unknown: ignore}\n"
        "model: {layers: [{units: 5}]}\ntrain: {epochs: 2}\n"
    )
    for name, target, excluded in (("classes", "label", "price, volume"), ("values", "[price, volume]", "label")):
        config = common.replace("exclude: [id]", f"exclude: [id, {excluded}]").replace(
            "data:\n", f"data:\n  target: {target}\n"
        )
        (folder / f"{name}.yaml").write_text(f"name: {name}\n" + config)
    for name in ("classes", "values"):
        api.fit(folder / f"{name}.yaml", out=folder / name)
    return folder


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of SMALL_BATCH rows, the fast path's kernels whatever the size, and the engine's
    prediction batch the same size (a row's outputs depend on the batch it is computed in)."""
    logits = Sequential.logits
    monkeypatch.setattr(Sequential, "logits", lambda self, x, batch_size=4096: logits(self, x, SMALL_BATCH))
    monkeypatch.setattr(predict, "BLOCK_ROWS", SMALL_BATCH * 2)
    monkeypatch.setattr(csv_text, "FAST_MIN_CELLS", 0)


CASES = [
    ("classes", "train.csv", []),
    ("classes", "crlf.csv", ["id", "label"]),
    ("values", "train.csv", ["id", "when", "colour"]),
    ("values", "crlf.csv", ["price"]),
]


@pytest.mark.parametrize("run_name, data, keep", CASES)
def test_streamed_output_is_the_whole_file_at_once(runs, small_blocks, tmp_path, run_name, data, keep):
    expected = predict.predictions_csv(*predict.predict_rows(runs / run_name, runs / data, keep)).encode()
    options = [arg for name in keep for arg in ("--keep", name)]
    shown = runner.invoke(app, ["predict", str(runs / run_name), str(runs / data), *options])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout_bytes == expected
    out = tmp_path / "deep" / "predictions.csv"
    written = runner.invoke(app, ["predict", str(runs / run_name), str(runs / data), *options, "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert out.read_bytes() == expected
    assert "wrote 90 predictions" in written.stderr
