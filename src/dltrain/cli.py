"""The `dltrain` command line: parse arguments, call one command function, render the result."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import signal
import sys
import warnings
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from . import __version__, report
from .commands import check as check_command
from .commands import common
from .commands import evaluate as evaluate_command
from .commands import fit as fit_command
from .commands import predict as predict_command
from .config import dump_config
from .engine.kernel_cache import KernelCacheWarning
from .errors import DltrainError, Interrupted, signal_of
from .files import check_writable, write_output

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train neural networks described in YAML on CSV files.\n\n"
    "Example: dltrain fit configs/iris.yaml && dltrain eval runs/iris data/iris.csv",
)


def _show_version(value: bool):
    if value:
        from .engine import kernels

        try:
            common.check_environment()
        except DltrainError as error:
            report.show_error(str(error))
            raise typer.Exit(error.exit_code) from None
        report.write_text(f"dltrain {__version__}\nengine: {kernels.describe()}\n")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        Optional[bool],
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Print dltrain's version and which engine path is active (fused kernels or reference NumPy), "
            "then exit.",
        ),
    ] = None,
):
    """Train neural networks described in YAML on CSV files."""


def user_errors(command):
    """Turn dltrain's own errors into one message on stderr and their exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            common.check_environment()
            with one_line_warnings():
                return command(*args, **kwargs)
        except DltrainError as error:
            report.show_error(str(error))
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt as interrupt:
            report.show_error("interrupted")
            raise typer.Exit(128 + signal_of(interrupt)) from None

    return wrapper


@contextlib.contextmanager
def one_line_warnings():
    """dltrain's own warnings (a kernel cache it cannot use) as one "warning: ..." line each,
    instead of Python's two lines with a file name and source line."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, KernelCacheWarning):
            report.show_warning(str(message))
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


@contextlib.contextmanager
def termination_as_interrupt():
    """SIGTERM (kill, systemd, Docker, batch schedulers) and SIGHUP stop a fit the way Ctrl-C does."""

    def interrupt(number, frame):
        raise Interrupted(number)

    numbers = [number for number in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if number]
    previous = {number: signal.signal(number, interrupt) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


ConfigArg = Annotated[Path, typer.Argument(help="YAML config file.", show_default=False)]
RunArg = Annotated[Path, typer.Argument(help="Run folder written by `dltrain fit`.", show_default=False)]
DataArg = Annotated[Path, typer.Argument(help="CSV file with a header row.", show_default=False)]
DelimiterOption = Annotated[
    Optional[str],
    typer.Option(help="The CSV's delimiter: , ; tab or | (default: detected in the file).", show_default=False),
]
EncodingOption = Annotated[
    Optional[str],
    typer.Option(
        help="The CSV's text encoding, e.g. latin-1 (default: UTF-8, with or without a BOM).", show_default=False
    ),
]
SetOption = Annotated[
    Optional[List[str]],
    typer.Option("--set", help="Override a config key, e.g. --set train.epochs=20 (repeatable).", show_default=False),
]


@app.command()
@user_errors
def init(
    data: DataArg,
    target: Annotated[
        List[str],
        typer.Option(
            "--target",
            help="The column to predict; repeat it for multi-target regression (numeric columns).",
            show_default=False,
        ),
    ],
    out: Annotated[Optional[Path], typer.Option(help="Config file to write (default: <DATA name>.yaml here).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    encoding: Annotated[str, typer.Option(help="Text encoding of the CSV, e.g. latin-1.")] = "utf-8",
):
    """Write a commented starter config for a CSV: column types, exclusions, missing values, network.

    Example: dltrain init customers.csv --target churn --out churn.yaml && dltrain fit churn.yaml
    """
    from .commands.init import write_starter_config

    out = out if out is not None else Path(f"{data.stem}.yaml")
    starter = write_starter_config(data, target[0] if len(target) == 1 else target, out, force, encoding)
    classes = f" ({len(starter.classes)} classes)" if starter.classes else ""
    report.console.print(
        f"wrote {out}: {len(starter.features)} feature columns ({starter.n_inputs} inputs), "
        f"{len(starter.excluded)} excluded; task {starter.task}{classes}",
        markup=False,
        soft_wrap=True,
    )
    for column, reason in starter.excluded.items():
        report.console.print(f"  excluded {column}: {reason}", markup=False, soft_wrap=True)
    for warning in starter.warnings:
        report.console.print(f"warning: {warning}", markup=False, soft_wrap=True)
    report.console.print(f"next: dltrain fit {out}", markup=False)


def _refuse_extra_arguments(ctx: typer.Context, overrides):
    """A word after --set KEY (``--set train.epochs 50``) is its value written with a space."""
    if not ctx.args:
        return
    extra = ctx.args[0]
    keys = [text for text in overrides or [] if "=" not in text]
    if keys:
        raise DltrainError(f"--set {keys[0]} {extra}: write --set {keys[0]}={extra} (KEY=VALUE, no space)")
    raise DltrainError(f"unexpected argument {extra!r}; see dltrain {ctx.command.name} --help")


_EXTRA_ARGUMENTS = {"allow_extra_args": True}


@app.command(context_settings=_EXTRA_ARGUMENTS)
@user_errors
def check(ctx: typer.Context, config: ConfigArg, overrides: SetOption = None):
    """Validate a config and its data; print the resolved config and a model summary."""
    _refuse_extra_arguments(ctx, overrides)
    result = check_command.check(config, overrides or [])
    report.console.print(f"# resolved config ({config})")
    report.console.print(dump_config(result.config), markup=False, soft_wrap=True)
    data = result.data
    parts = [f"train {len(data.train)} rows"]
    if data.validation is not None:
        parts.append(f"validation {len(data.validation)} rows")
    if data.test is not None:
        parts.append(f"test {len(data.test)} rows")
    schema = data.schema
    target = f"classes {', '.join(schema.class_labels)}" if schema.task == "classification" else "numeric target"
    report.console.print(
        f"data: {', '.join(parts)}; {len(schema.feature_names)} features; {target}", markup=False, soft_wrap=True
    )
    report.console.print(report.summary_table(result.model.summary()))
    if result.config.tune is not None:
        from .commands.tune import check_search

        plan = check_search(config, result.data, result.config)
        report.console.print(
            f"tune: {len(plan.dimensions)} entries in tune.space"
            + (" and feature selection" if plan.tune.features == "select" else "")
            + f", {plan.tune.sampler} sampler, metric {plan.tune.metric}: OK",
            markup=False,
        )
    report.console.print("config OK")


@app.command(context_settings=_EXTRA_ARGUMENTS)
@user_errors
def fit(
    ctx: typer.Context,
    config: ConfigArg,
    out: Annotated[
        Optional[Path], typer.Option(help="Run folder (default: runs/<name>, or runs/<name>-2 … if taken).")
    ] = None,
    overrides: SetOption = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the run already in --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print only the final summary.")] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the checkpoint in --out up to train.epochs.")
    ] = False,
):
    """Train the network a config describes and save a run folder.

    Ctrl-C (or SIGTERM) saves the last finished epoch and prints the command that resumes it
    (--out DIR --resume). With --force the old run stays until the new one is saved."""
    _refuse_extra_arguments(ctx, overrides)
    reporter = report.TrainingReporter(quiet=quiet)

    def announce(run_dir):
        if not quiet:
            report.console.print(f"run folder: {run_dir}", markup=False)

    try:
        with termination_as_interrupt():
            result = fit_command.fit(
                config,
                overrides or [],
                out,
                force,
                reporter,
                on_run_dir=announce,
                resume=resume,
                command_line=["dltrain", *sys.argv[1:]],
            )
    finally:
        reporter.close()
    for line in report.fit_summary(result):
        report.console.print(line, markup=False)
    report.console.print(report.metrics_table(result.metrics, columns=["loss", *result.config.train.metrics]))
    report.console.print(f"saved {result.run_dir}", markup=False)


def _json_safe(value):
    """NaN (e.g. ROC AUC when one class is absent) becomes null: bare NaN is not JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


@app.command(name="eval")
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
):
    """Loss and metrics of a trained run on a labelled CSV (per class and a confusion matrix for classes)."""
    metrics, labels = evaluate_command.evaluate_run(
        run_dir, data, common.csv_dialect(delimiter, encoding), on_note=report.show_note
    )
    if as_json:
        report.write_text(json.dumps(_json_safe(report.evaluation_json(metrics, labels))) + "\n")
        return
    for part in report.evaluation_report(metrics, labels, title=str(data)):
        report.console.print(part)


@app.command()
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
):
    """Predictions for every row of a CSV: the target column, then prob_<label> per class.

    Example: dltrain predict runs/churn customers.csv --keep customer_id --out predictions.csv"""
    if out is not None:
        predict_command.refuse_overwriting_inputs(out, [data], run_dir)
        check_writable(out, make_parents=True)
    header, rows = predict_command.predict_rows(
        run_dir, data, keep or [], common.csv_dialect(delimiter, encoding), on_note=report.show_note
    )
    text = predict_command.predictions_csv(header, rows)
    if out is None:
        report.write_text(text)
    else:
        write_output(out, text)
        report.error_console.print(f"wrote {len(rows)} predictions to {out}", markup=False)


@app.command()
@user_errors
def export(
    run_dir: RunArg,
    out: Annotated[Optional[Path], typer.Option(help="ONNX file to write (default: RUN_DIR/model.onnx).")] = None,
    format: Annotated[str, typer.Option("--format", help="File format; onnx is the one there is.")] = "onnx",
    opset: Annotated[
        Optional[int],
        typer.Option(help="ONNX opset (default: the lowest that holds every operator used).", show_default=False),
    ] = None,
    inputs: Annotated[
        str,
        typer.Option(
            "--inputs",
            help="columns: one input per CSV column; features: one [N, F] "
            "float tensor (models without categorical columns).",
        ),
    ] = "columns",
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
):
    """Export a trained run as one ONNX model: raw CSV columns in, labels and probabilities out (needs the onnx extra).

    Fills, one-hot encoding, scaling and network are in the graph, checked against predict before it is written.

    Example: dltrain export runs/iris --out iris.onnx
    """
    from .commands.export import export_run

    result = export_run(run_dir, out, format, opset, force, inputs)
    report.console.print(
        f"wrote {result.path} ({result.model_bytes:,} bytes, ONNX opset {result.opset}): inputs "
        f"{', '.join(result.inputs)}; outputs {', '.join(result.outputs)}; equal to dltrain predict "
        f"on {result.verified_rows} verification rows",
        markup=False,
        soft_wrap=True,
    )


@app.command()
@user_errors
def schema():
    """Print the config's JSON Schema, for editor completion and validation.

    Example: dltrain schema > dltrain.schema.json, then start a config with the line
    # yaml-language-server: $schema=dltrain.schema.json"""
    from .config import json_schema

    report.write_text(json.dumps(json_schema(), indent=2) + "\n")


@app.command()
@user_errors
def plot(
    run_dir: RunArg,
    out: Annotated[
        Optional[Path], typer.Option(help="Image file, .png, .svg or .pdf (default: RUN_DIR/curves.png).")
    ] = None,
):
    """Draw training and validation curves per epoch, with the best epoch marked.

    Given a study folder from `dltrain tune`: the optimisation history and each parameter's slice.
    Needs matplotlib: pip install '.\\[plot]' in dltrain's project folder."""
    from .plot import is_study_folder, plot_curves, plot_study

    path = plot_study(run_dir, out) if is_study_folder(run_dir) else plot_curves(run_dir, out)
    report.console.print(f"wrote {path}", markup=False)


@app.command()
@user_errors
def tune(
    config: ConfigArg,
    trials: Annotated[
        Optional[int], typer.Option(help="Finished trials to reach (default: tune.trials).", show_default=False)
    ] = None,
    timeout: Annotated[
        Optional[float], typer.Option(help="Seconds for the whole search (default: tune.timeout).", show_default=False)
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Worker processes on this machine, each with its share of the cores.")
    ] = 1,
    storage: Annotated[
        Optional[str],
        typer.Option(
            help="Shared study storage, e.g. postgresql://USER@HOST/DB (default: a journal file in the study folder).",
            show_default=False,
        ),
    ] = None,
    study: Annotated[
        Optional[str], typer.Option(help="Study name in the storage (default: the config's name).", show_default=False)
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(help="Study folder (default: runs/<name>-tune, or -2 … if taken).", show_default=False),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print only the final summary.")] = False,
):
    """Search the config's tune: section (model, hyperparameters, features) with Optuna.

    Running the same command again (same --out or --storage) continues the study until it has
    N finished trials; the same command on several machines with --storage joins one study.

    Example: dltrain tune configs/iris.yaml --trials 20 --out runs/iris-tune && dltrain fit runs/iris-tune/best.yaml
    """
    from .commands.tune import tune as run_tune

    def on_trial(trial, counts, n_trials, metric, best_value):
        if not quiet:
            report.console.print(
                report.tune_trial_line(trial, counts, n_trials, metric, best_value), markup=False, soft_wrap=True
            )

    def on_stage(text):
        if not quiet:
            report.console.print(text, markup=False, soft_wrap=True)

    result = run_tune(config, trials, timeout, workers, storage, study, out, on_trial=on_trial, on_stage=on_stage)
    lines, tables, footer = report.tune_summary(result)
    for line in lines:
        report.console.print(line, markup=False, soft_wrap=True)
    for table in tables:
        report.console.print(table)
    for line in footer:
        report.console.print(line, markup=False, soft_wrap=True)


@app.command()
@user_errors
def explain(
    run_dir: RunArg,
    data: DataArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    repeats: Annotated[int, typer.Option(help="Shuffles per column; the spread is over these.")] = 5,
):
    """Permutation importance of each input column: how much the loss rises when it is shuffled."""
    from .commands.explain import explain_run

    if repeats < 1:
        raise typer.BadParameter("give at least 1", param_hint="--repeats")
    baseline, importances = explain_run(run_dir, data, repeats)
    rows = [
        {"column": item.column, "importance": item.importance, "spread": item.spread, "inputs": item.inputs}
        for item in importances
    ]
    if as_json:
        report.write_text(json.dumps(_json_safe({"loss": baseline, "repeats": repeats, "columns": rows})) + "\n")
        return
    report.console.print(
        f"{data}: loss {report.format_value(baseline)}; importance = mean rise of the loss "
        f"when a column is shuffled ({repeats} repeats)",
        markup=False,
        soft_wrap=True,
    )
    report.console.print(report.importance_table(rows))


@app.command()
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
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port, printed at start).")] = 8000,
    workers: Annotated[int, typer.Option(help="Processes answering requests, sharing the loaded runs.")] = 1,
    max_body: Annotated[
        float, typer.Option("--max-body", help="Largest request body, in MB; larger ones are refused (413).")
    ] = 10.0,
    max_rows: Annotated[int, typer.Option("--max-rows", help="Most rows in one request (413 beyond).")] = 100_000,
    quiet: Annotated[bool, typer.Option("--quiet", help="No access line per request.")] = False,
):
    """Answer predictions over HTTP: POST /predict with JSON rows or a CSV, GET /metadata, GET /health (needs the
    serve extra).

    The same numbers as dltrain predict; every request is one access line (method, path, status, rows, ms).
    With DLTRAIN_SERVE_TOKEN set, requests need Authorization: Bearer <token>. SIGTERM or Ctrl-C finish
    the requests in flight and exit 0.

    Example: dltrain serve runs/iris --port 8000, then
    curl -H 'Content-Type: text/csv' --data-binary @data/iris.csv localhost:8000/predict
    """
    from .commands.serve.server import serve as run_server

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


def main():
    if hasattr(signal, "SIGXFSZ"):
        # Past `ulimit -f` a write then fails with EFBIG, reported in words, instead of killing us.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    app()
