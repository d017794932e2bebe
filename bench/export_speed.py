"""Time onnxruntime on an exported model against `dltrain predict`, side by side, on 10,000 digits rows.

    pip install -e '.[onnx]'
    python bench/export_speed.py [--rows 10000] [--runs 7] [--threads 1]

Trains the shipped digits config for a few epochs (speed does not depend on accuracy) into a
temporary folder, exports it, and writes a CSV of --rows rows (digits.csv repeated). Then, in
turn after one warm-up of each (so machine noise hits both alike), the median of --runs of:

  whole predict, from the CSV    dltrain: what `dltrain predict RUN CSV --out FILE` computes
                                 (predict.predict_rows + predictions_csv); onnxruntime: the
                                 README's snippet (csv.DictReader, float32 columns, session.run)
  from parsed columns            dltrain: encode_features + model.predict on the parsed
                                 columns; onnxruntime: session.run on the column feed
  from a parsed matrix           dltrain: transform + model.predict on the float32 matrix;
                                 onnxruntime: the model exported with --inputs features, one
                                 [N, 64] tensor
  session start (once)           onnxruntime.InferenceSession on the file, for reference

Both run single-threaded by default (BLAS through threadpoolctl, onnxruntime's intra-op pool).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "src"))

import onnxruntime  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import dltrain  # noqa: E402
from dltrain import __version__  # noqa: E402
from dltrain.commands import export, fit, predict  # noqa: E402

BOOLEANS = {"true": 1.0, "yes": 1.0, "t": 1.0, "y": 1.0, "false": 0.0, "no": 0.0, "f": 0.0, "n": 0.0}


def onnx_predict_csv(session, path):
    """The README's snippet: read the CSV with the csv module (its delimiter, the model's NA
    tokens and decimal mark), feed raw columns, run."""
    meta = session.get_modelmeta().custom_metadata_map
    missing = set(json.loads(meta["na_values"]))
    with open(path, newline="", encoding="utf-8-sig") as handle:
        delimiter = max(",;\t|", key=handle.readline().count)
        handle.seek(0)
        rows = list(csv.DictReader(handle, delimiter=delimiter))
    decimal = meta["decimal"] if delimiter != "," else "."

    def number(cell):
        if cell in missing:
            return float("nan")
        return BOOLEANS[cell.lower()] if cell.lower() in BOOLEANS else float(cell.replace(decimal, "."))

    feed = {}
    for item in session.get_inputs():
        cells = [row[item.name].strip() for row in rows]
        if item.type == "tensor(string)":
            feed[item.name] = np.array(cells, dtype=object).reshape(-1, 1)
        else:
            feed[item.name] = np.array([number(cell) for cell in cells], dtype=np.float32).reshape(-1, 1)
    return session.run(["label", "probabilities"], feed)


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="dltrain-export-bench-"))
    fit.fit(REPO_ROOT / "configs" / "digits.yaml", ["train.epochs=5", "data.cache=false"], out=folder / "run")
    export.export_run(folder / "run", folder / "digits.onnx")
    export.export_run(folder / "run", folder / "digits_features.onnx", input_form="features")
    lines = (REPO_ROOT / "data" / "digits.csv").read_text().splitlines()
    body = lines[1:]
    data = folder / "digits_rows.csv"
    data.write_text("\n".join([lines[0]] + [body[index % len(body)] for index in range(args.rows)]) + "\n")

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    start_times = []
    session = None
    for _ in range(args.runs):
        begin = time.perf_counter()
        session = onnxruntime.InferenceSession(str(folder / "digits.onnx"), options, providers=["CPUExecutionProvider"])
        start_times.append(time.perf_counter() - begin)

    matrix_session = onnxruntime.InferenceSession(
        str(folder / "digits_features.onnx"), options, providers=["CPUExecutionProvider"]
    )
    run = dltrain.load(folder / "run")
    table = run.schema.open(data)
    columns = run.schema.read_columns(table, with_target=False)
    feed = {name: columns.numbers(name).reshape(-1, 1).copy() for name in run.schema.feature_names}

    def dltrain_whole():
        header, rows = predict.predict_rows(folder / "run", data)
        (folder / "predictions.csv").write_text(predict.predictions_csv(header, rows))

    def onnx_whole():
        labels, probabilities = onnx_predict_csv(session, data)
        header = ["digit"] + [f"prob_{label}" for label in run.schema.class_labels]
        rows = [[label] + [f"{p:.6g}" for p in row] for label, row in zip(labels.tolist(), probabilities.tolist())]
        (folder / "predictions_onnx.csv").write_text(predict.predictions_csv(header, rows))

    def dltrain_columns():
        run.model.predict(run.schema.encode_features(columns))

    def onnx_columns():
        session.run(["label", "probabilities"], feed)

    matrix = columns.matrix

    def dltrain_matrix():
        run.model.predict(run.schema.transform(matrix.copy()))

    def onnx_matrix():
        matrix_session.run(["label", "probabilities"], {"features": matrix})

    # The two agree before anything is timed.
    engine = run.model.predict(run.schema.encode_features(columns))
    _, probabilities = session.run(["label", "probabilities"], feed)
    assert np.abs(engine - probabilities).max() <= 1e-5

    pairs = {
        "whole predict, from the CSV": (dltrain_whole, onnx_whole),
        "from parsed columns": (dltrain_columns, onnx_columns),
        "from a parsed matrix": (dltrain_matrix, onnx_matrix),
    }
    times = {name: ([], []) for name in pairs}
    with threadpool_limits(limits=args.threads):
        for _ in range(2):
            for dltrain_step, onnx_step in pairs.values():
                dltrain_step()
                onnx_step()
        for _ in range(args.runs):
            for name, (dltrain_step, onnx_step) in pairs.items():
                times[name][0].append(timed(dltrain_step))
                times[name][1].append(timed(onnx_step))

    print(
        f"dltrain {__version__}, onnxruntime {onnxruntime.__version__}, NumPy {np.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()}; {args.rows} rows x "
        f"{len(run.schema.feature_names)} columns; {args.threads} thread(s); median of {args.runs} runs"
    )
    print("| measurement | dltrain predict | onnxruntime | onnxruntime / dltrain |")
    print("|---|---:|---:|---:|")
    for name, (dltrain_times, onnx_times) in times.items():
        ours, theirs = statistics.median(dltrain_times), statistics.median(onnx_times)
        print(f"| {name} | {ours * 1e3:.1f} ms | {theirs * 1e3:.1f} ms | {theirs / ours:.2f}x |")
    print(f"| session start (once) | | {statistics.median(start_times) * 1e3:.1f} ms | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
