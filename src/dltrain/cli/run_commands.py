"""The commands that use a trained run folder: eval, predict, export, plot, explain, serve."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from .app import user_errors
from .options import (
    DataArg,
    DelimiterOption,
    DeviceOption,
    EncodingOption,
    ExportFormat,
    ExportInputs,
    ForceOutOption,
    QuietReadOption,
    RunArg,
    above_zero,
    device_name,
    json_text,
)


@user_errors
def evaluate(
    run_dir: RunArg,
    data: DataArg,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object: the metrics, then per class "
            "scores and the confusion matrix as nested objects and lists.",
        ),
    ] = False,
    delimiter: DelimiterOption = None,
    encoding: EncodingOption = None,
    quiet: QuietReadOption = False,
    device: DeviceOption = None,
):
    """Loss and metrics of a trained run on a labelled CSV (per class and a confusion matrix for classes).

    Example: dltrain eval runs/iris data/iris.csv --json
    """
    from .. import report
    from ..api import csv_dialect
    from ..commands.evaluate import evaluate_run

    with report.reading(quiet):
        metrics, labels = evaluate_run(
            run_dir, data, csv_dialect(delimiter, encoding), on_note=report.show_note, device=device_name(device)
        )
    if as_json:
        report.write_text(json_text(report.evaluation_json(metrics, labels)) + "\n")
        return
    for part in report.evaluation_report(metrics, labels, title=str(data)):
        report.console.print(part)


@user_errors
def predict(
    run_dir: RunArg,
    data: DataArg,
    out: Annotated[Optional[Path], typer.Option(help="Write the CSV here instead of stdout.")] = None,
    keep: Annotated[
        Optional[List[str]],
        typer.Option(
            "--keep",
            help="Copy this input column (e.g. an ID, or the target) into the output, first (repeatable); "
            "a prediction column of the same name becomes predicted_<name>.",
            show_default=False,
        ),
    ] = None,
    delimiter: DelimiterOption = None,
    encoding: EncodingOption = None,
    quiet: QuietReadOption = False,
    device: DeviceOption = None,
):
    """Predictions for every row of a CSV: the target column, then prob_<label> per class.

    Example: dltrain predict runs/churn customers.csv --keep customer_id --out predictions.csv
    """
    from .. import report
    from ..api import csv_dialect
    from ..commands import predict as predict_command
    from ..files import check_writable

    if out is not None:
        predict_command.refuse_overwriting_inputs(out, [data], run_dir)
        check_writable(out, make_parents=True)
    arguments = (run_dir, data)
    options = dict(
        keep=keep or [],
        dialect=csv_dialect(delimiter, encoding),
        on_note=report.show_note,
        device=device_name(device),
    )
    with report.reading(quiet):
        if out is None:
            try:
                predict_command.write_predictions(
                    *arguments, report.write_bytes, encoding=report.output_encoding(), **options
                )
            except BrokenPipeError:  # `| head`: the reader has what it wanted; stop as a pipe's writer does
                report.stdout_gone()
                raise typer.Exit(128 + signal.SIGPIPE) from None
            return
        with predict_command.OutputFile(out) as output:
            rows = predict_command.write_predictions(*arguments, output.write, **options)
    report.error_console.print(f"wrote {rows} predictions to {out}", markup=False)


@user_errors
def export(
    run_dir: RunArg,
    out: Annotated[Optional[Path], typer.Option(help="ONNX file to write (default: RUN_DIR/model.onnx).")] = None,
    format: Annotated[ExportFormat, typer.Option("--format", help="File format; onnx is the one there is.")] = (
        ExportFormat.onnx
    ),
    opset: Annotated[
        Optional[int],
        typer.Option(help="ONNX opset (default: the lowest that holds every operator used).", show_default=False),
    ] = None,
    inputs: Annotated[
        ExportInputs,
        typer.Option(
            "--inputs",
            help="columns: one input per CSV column; features: one [N, F] "
            "float tensor (models without categorical columns).",
        ),
    ] = ExportInputs.columns,
    force: ForceOutOption = False,
):
    """Export a trained run as one ONNX model: raw CSV columns in, labels and probabilities out (needs the onnx extra).

    Fills, one-hot encoding, scaling and network are in the graph, checked against predict before it is written.

    Example: dltrain export runs/iris --out iris.onnx
    """
    from .. import report
    from ..commands.export import export_run

    result = export_run(run_dir, out, format.value, opset, force, inputs.value)
    report.console.print(
        f"wrote {result.path} ({result.model_bytes:,} bytes, ONNX opset {result.opset}): inputs "
        f"{', '.join(result.inputs)}; outputs {', '.join(result.outputs)}; equal to dltrain predict "
        f"on {result.verified_rows} verification rows",
        markup=False,
        soft_wrap=True,
    )


@user_errors
def plot(
    run_dir: RunArg,
    out: Annotated[
        Optional[Path], typer.Option(help="Image file, .png, .svg or .pdf (default: RUN_DIR/curves.png).")
    ] = None,
):
    """Draw training and validation curves per epoch, with the best epoch marked.

    Given a study folder from `dltrain tune`: the optimisation history and each parameter's slice.

    Needs matplotlib: pip install '.\\[plot]' in dltrain's project folder.

    Example: dltrain plot runs/iris --out curves.svg
    """
    from .. import report
    from ..plot import is_study_folder, plot_curves, plot_study

    path = plot_study(run_dir, out) if is_study_folder(run_dir) else plot_curves(run_dir, out)
    report.console.print(f"wrote {path}", markup=False)


@user_errors
def explain(
    run_dir: RunArg,
    data: DataArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    repeats: Annotated[int, typer.Option(min=1, help="Shuffles per column; the spread is over these.")] = 5,
):
    """Permutation importance of each input column: how much the loss rises when it is shuffled.

    Example: dltrain explain runs/iris data/iris.csv --repeats 10
    """
    from .. import report
    from ..commands.explain import explain_run
    from ..metrics import format_value

    baseline, importances = explain_run(run_dir, data, repeats)
    rows = [
        {"column": item.column, "importance": item.importance, "spread": item.spread, "inputs": item.inputs}
        for item in importances
    ]
    if as_json:
        report.write_text(json_text({"loss": baseline, "repeats": repeats, "columns": rows}) + "\n")
        return
    report.console.print(
        f"{data}: loss {format_value(baseline)}; importance = mean rise of the loss "
        f"when a column is shuffled ({repeats} repeats)",
        markup=False,
        soft_wrap=True,
    )
    report.console.print(report.importance_table(rows))


@user_errors
def serve(
    runs: Annotated[
        List[Path],
        typer.Argument(
            help="Run folders written by `dltrain fit`, each served under its folder name (or NAME=RUN_DIR).",
            show_default=False,
        ),
    ],
    host: Annotated[
        str, typer.Option(help="Address to listen on; anything but 127.0.0.1/localhost is reachable from elsewhere.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port, printed at start).")
    ] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Processes answering requests, sharing the loaded runs.")] = 1,
    max_body: Annotated[
        float,
        typer.Option(
            "--max-body", callback=above_zero, help="Largest request body, in MB; larger ones are refused (413)."
        ),
    ] = 10.0,
    max_rows: Annotated[
        int, typer.Option("--max-rows", min=1, help="Most rows in one request (413 beyond).")
    ] = 100_000,
    quiet: Annotated[bool, typer.Option("--quiet", help="No access line per request.")] = False,
):
    """Answer predictions over HTTP: POST /predict, GET /metadata, GET /health (needs the serve extra).

    POST /predict takes JSON rows or a CSV and answers with the same numbers as dltrain predict.

    Every request is one access line (method, path, status, rows, ms).

    With DLTRAIN_SERVE_TOKEN set, requests need Authorization: Bearer <token>.

    SIGTERM, Ctrl-C or SIGHUP finish the requests in flight and exit 0.

    Example: dltrain serve runs/iris --port 8000, then
    curl -H 'Content-Type: text/csv' --data-binary @data/iris.csv localhost:8000/predict
    """
    from .. import report
    from ..commands.serve.server import serve as run_server

    run_server(
        [str(run) for run in runs],
        host,
        port,
        workers,
        max_body,
        max_rows,
        log=None if quiet else report.log_line,
        announce=report.log_line,
    )
