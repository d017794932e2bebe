"""The `dltrain` command line: parse arguments, call one command function, render the result.

It starts at once: this module imports the standard library and typer only, so `dltrain --help`,
`dltrain COMMAND --help` and `dltrain --version` never load NumPy, pydantic, rich's tables or a
command's module; each command imports what it needs when it runs. Every mistake, typer's (an
unknown option, a value out of range) or dltrain's, reaches the user the same way: one
``error: ...`` line on stderr, perhaps a ``hint: ...`` line, and its exit code (2 for a mistake).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import math
import signal
import sys
import warnings
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from typer.core import TyperGroup

from . import __version__

# typer exports BadParameter alone of click's errors; its base is click's UsageError (or the
# copy of click newer typers carry), the class of every command-line mistake.
_UsageError = next(base for base in typer.BadParameter.__mro__ if base.__name__ == "UsageError")


def show_error(message: str, hint: str | None = None) -> None:
    """The one way an error reaches the user: ``error: MESSAGE`` on stderr, then ``hint: HINT``."""
    typer.echo(f"error: {message}", err=True)
    if hint:
        typer.echo(f"hint: {hint}", err=True)


@contextlib.contextmanager
def _usage_errors():
    """A command-line mistake typer finds (or a command raises as one) printed as dltrain's errors are."""
    try:
        yield
    except _UsageError as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # `dltrain` alone: typer shows the help
            raise
        ctx = getattr(error, "ctx", None)
        show_error(error.format_message(), f"see {ctx.command_path if ctx else 'dltrain'} --help")
        raise typer.Exit(error.exit_code) from None


class _Commands(TyperGroup):
    """The group of dltrain's commands, parsing and dispatching under ``_usage_errors``."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            # A flag left out is False, which typer passes on as it is; None (the default typer
            # gives --help and its completion flags) it parses through pydantic: 0.1 s more for
            # `dltrain COMMAND --help`.
            if getattr(param, "is_flag", False) and param.default is None:
                param.default = False
        return params

    def make_context(self, info_name, args, parent=None, **extra):
        with _usage_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with _usage_errors():
            return super().invoke(ctx)


app = typer.Typer(
    cls=_Commands,
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train neural networks described in YAML on CSV files.\n\n"
    "Example: dltrain fit configs/iris.yaml && dltrain eval runs/iris data/iris.csv",
)


def _show_version(value: bool):
    if value:
        from .commands.environment import check_kernels_variable
        from .engine import cuda, kernels
        from .errors import DltrainError

        try:
            check_kernels_variable()
        except DltrainError as error:
            show_error(error.message, error.hint)
            raise typer.Exit(error.exit_code) from None
        # CuPy is imported only where it is installed, to name the GPU.
        typer.echo(f"dltrain {__version__}\nengine: {kernels.describe()}\ngpu: {cuda.describe()}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Print dltrain's version, which engine path is active (fused kernels or reference NumPy) "
            "and the GPU (through CuPy) where there is one, then exit.",
        ),
    ] = False,
):
    """Train neural networks described in YAML on CSV files."""


def user_errors(command):
    """Check the DLTRAIN_* variables, then run the command; dltrain's own errors become one
    message on stderr and their exit code; Ctrl-C, SIGTERM and SIGHUP stop it the same way
    (signals.stop_as_interrupt): "interrupted" and 128 + the signal's number."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from .commands.environment import check_environment
        from .errors import DltrainError, signal_of
        from .signals import stop_as_interrupt

        try:
            with stop_as_interrupt():
                check_environment()
                with one_line_warnings():
                    return command(*args, **kwargs)
        except DltrainError as error:
            show_error(error.message, error.hint)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt as interrupt:
            show_error("interrupted")
            raise typer.Exit(128 + signal_of(interrupt)) from None

    return wrapper


@contextlib.contextmanager
def one_line_warnings():
    """dltrain's own warnings (a kernel cache it cannot use, a system without file locks) as one
    "warning: ..." line each, instead of Python's two lines with a file name and source line."""
    from .engine.kernel_cache import KernelCacheWarning
    from .system import NoLockWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (KernelCacheWarning, NoLockWarning)):
            from . import report

            report.show_warning(str(message))
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


# ---------------------------------------------------------------- argument types and checks


def _above_zero(value: float | None) -> float | None:
    """A number of seconds or megabytes: finite and above 0 (nan and inf parse as floats too)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value:g}: give a finite number above 0")
    return value


def _delimiter(value: str | None) -> str | None:
    """--delimiter: , ; | or a tab, also written as a word (tab, comma, semicolon, pipe) or \\t."""
    if value is None:
        return None
    from .config import DELIMITER_ALIASES
    from .data.csv import DELIMITERS

    delimiter = DELIMITER_ALIASES.get(value, value)
    if delimiter not in DELIMITERS:
        raise typer.BadParameter(f"{value!r}: use one of , ; tab |, or leave it out to detect it")
    return delimiter


class ExportFormat(str, enum.Enum):
    """The file formats of ``dltrain export`` (commands/export.py's FORMATS)."""

    onnx = "onnx"


class ExportInputs(str, enum.Enum):
    """The input forms of ``dltrain export`` (commands/export.py's INPUT_FORMS)."""

    columns = "columns"
    features = "features"


class Device(str, enum.Enum):
    """Where to compute (config.py's train.device)."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


DeviceOption = Annotated[
    Optional[Device],
    typer.Option(
        help="Where to compute: cpu, cuda (a GPU, through CuPy: pip install '.[cuda12]'), or auto (the GPU where "
        "one is found and the network is large enough to gain). Overrides train.device.",
        case_sensitive=False,
        show_default=False,
    ),
]


def _device(value) -> str | None:
    return None if value is None else Device(value).value


ConfigArg = Annotated[Path, typer.Argument(help="YAML config file.", show_default=False)]
RunArg = Annotated[Path, typer.Argument(help="Run folder written by `dltrain fit`.", show_default=False)]
DataArg = Annotated[Path, typer.Argument(help="CSV file with a header row.", show_default=False)]
DelimiterOption = Annotated[
    Optional[str],
    typer.Option(
        help="The CSV's delimiter: , ; tab or | (default: detected in the file).",
        callback=_delimiter,
        show_default=False,
    ),
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
    from . import report
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
        raise _UsageError(f"--set {keys[0]} {extra}: write --set {keys[0]}={extra} (KEY=VALUE, no space)", ctx)
    raise _UsageError(f"unexpected argument {extra!r}", ctx)


_EXTRA_ARGUMENTS = {"allow_extra_args": True}
QuietReadOption = Annotated[
    bool, typer.Option("--quiet", help="No progress report while a large CSV file is read (on stderr).")
]


@app.command(context_settings=_EXTRA_ARGUMENTS)
@user_errors
def check(ctx: typer.Context, config: ConfigArg, overrides: SetOption = None, quiet: QuietReadOption = False):
    """Validate a config and its data; print the resolved config and a model summary.

    Example: dltrain check configs/iris.yaml --set train.epochs=50
    """
    from . import report
    from .commands.check import check as check_config
    from .config import dump_config

    _refuse_extra_arguments(ctx, overrides)
    with report.reading(quiet):
        result = check_config(config, overrides or [])
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
            + f", {plan.tune.sampler} sampler, metric {plan.tune.metric}"
            + (f" over {plan.tune.cv} folds" if plan.tune.cv else "")
            + ": OK",
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
    cv: Annotated[
        Optional[int],
        typer.Option(
            min=2,
            help="First cross-validate the config on K folds of the training rows and print each metric's "
            "mean ± spread; then train the run as without it.",
            metavar="K",
            show_default=False,
        ),
    ] = None,
    device: DeviceOption = None,
):
    """Train the network a config describes and save a run folder.

    Ctrl-C, SIGTERM or SIGHUP saves the last finished epoch and prints the command that resumes it (--out DIR --resume).

    With --force the old run stays until the new one is saved.

    Example: dltrain fit configs/iris.yaml --out runs/iris --set train.epochs=100 (or --cv 5 to cross-validate first)
    """
    from . import report
    from .commands.fit import fit as fit_config

    _refuse_extra_arguments(ctx, overrides)
    reporter = report.TrainingReporter(quiet=quiet)

    def announce(run_dir):
        if not quiet:
            report.console.print(f"run folder: {run_dir}", markup=False)

    def on_fold(index, folds):
        if index == 0 and not quiet:
            report.console.print(report.cross_validation_heading(folds), markup=False, soft_wrap=True)
        if not quiet:
            report.console.print(report.cross_validation_line(index, folds), markup=False, soft_wrap=True)
        if index == folds.k - 1:
            report.console.print(report.cross_validation_table(folds))
            if not quiet:
                report.console.print("training the run itself, as without --cv:", markup=False)

    try:
        with report.reading(quiet):
            result = fit_config(
                config,
                overrides or [],
                out,
                force,
                reporter,
                on_run_dir=announce,
                resume=resume,
                command_line=["dltrain", *sys.argv[1:]],
                cv=cv,
                on_fold=on_fold,
                device=_device(device),
            )
    finally:
        reporter.close()
    for line in report.fit_summary(result):
        report.console.print(line, markup=False)
    report.console.print(report.metrics_table(result.metrics, columns=["loss", *result.config.train.metrics]))
    report.console.print(f"saved {result.run_dir}", markup=False)


def _json_text(value) -> str:
    """One line of JSON; NaN (e.g. ROC AUC when one class is absent) becomes null: bare NaN is not JSON."""
    import json

    return json.dumps(_json_safe(value))


def _json_safe(value):
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
    quiet: QuietReadOption = False,
    device: DeviceOption = None,
):
    """Loss and metrics of a trained run on a labelled CSV (per class and a confusion matrix for classes).

    Example: dltrain eval runs/iris data/iris.csv --json
    """
    from . import report
    from .api import csv_dialect
    from .commands.evaluate import evaluate_run

    with report.reading(quiet):
        metrics, labels = evaluate_run(
            run_dir, data, csv_dialect(delimiter, encoding), on_note=report.show_note, device=_device(device)
        )
    if as_json:
        report.write_text(_json_text(report.evaluation_json(metrics, labels)) + "\n")
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
    quiet: QuietReadOption = False,
    device: DeviceOption = None,
):
    """Predictions for every row of a CSV: the target column, then prob_<label> per class.

    Example: dltrain predict runs/churn customers.csv --keep customer_id --out predictions.csv
    """
    from . import report
    from .api import csv_dialect
    from .commands import predict as predict_command
    from .files import check_writable, write_output

    if out is not None:
        predict_command.refuse_overwriting_inputs(out, [data], run_dir)
        check_writable(out, make_parents=True)
    with report.reading(quiet):
        header, rows = predict_command.predict_rows(
            run_dir,
            data,
            keep or [],
            csv_dialect(delimiter, encoding),
            on_note=report.show_note,
            device=_device(device),
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
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
):
    """Export a trained run as one ONNX model: raw CSV columns in, labels and probabilities out (needs the onnx extra).

    Fills, one-hot encoding, scaling and network are in the graph, checked against predict before it is written.

    Example: dltrain export runs/iris --out iris.onnx
    """
    from . import report
    from .commands.export import export_run

    result = export_run(run_dir, out, format.value, opset, force, inputs.value)
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
    # yaml-language-server: $schema=dltrain.schema.json
    """
    import json

    from . import report
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

    Needs matplotlib: pip install '.\\[plot]' in dltrain's project folder.

    Example: dltrain plot runs/iris --out curves.svg
    """
    from . import report
    from .plot import is_study_folder, plot_curves, plot_study

    path = plot_study(run_dir, out) if is_study_folder(run_dir) else plot_curves(run_dir, out)
    report.console.print(f"wrote {path}", markup=False)


@app.command()
@user_errors
def tune(
    config: ConfigArg,
    trials: Annotated[
        Optional[int],
        typer.Option(min=1, help="Finished trials to reach (default: tune.trials).", show_default=False),
    ] = None,
    timeout: Annotated[
        Optional[float],
        typer.Option(
            callback=_above_zero, help="Seconds for the whole search (default: tune.timeout).", show_default=False
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes on this machine, each with its share of the cores.")
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
    device: DeviceOption = None,
):
    """Search the config's tune: section (model, hyperparameters, features) with Optuna.

    Running the same command again (same --out or --storage) continues the study until it has N finished trials.

    The same command on several machines with --storage joins one study.

    Example: dltrain tune configs/iris.yaml --trials 20 --out runs/iris-tune && dltrain fit runs/iris-tune/best.yaml
    """
    from . import report
    from .commands.tune import tune as run_tune

    def on_trial(trial, counts, n_trials, metric, best_value):
        if not quiet:
            report.console.print(
                report.tune_trial_line(trial, counts, n_trials, metric, best_value), markup=False, soft_wrap=True
            )

    def on_stage(text):
        if not quiet:
            report.console.print(text, markup=False, soft_wrap=True)

    with report.reading(quiet):
        result = run_tune(
            config, trials, timeout, workers, storage, study, out, on_trial, on_stage, device=_device(device)
        )
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
    repeats: Annotated[int, typer.Option(min=1, help="Shuffles per column; the spread is over these.")] = 5,
):
    """Permutation importance of each input column: how much the loss rises when it is shuffled.

    Example: dltrain explain runs/iris data/iris.csv --repeats 10
    """
    from . import report
    from .commands.explain import explain_run

    baseline, importances = explain_run(run_dir, data, repeats)
    rows = [
        {"column": item.column, "importance": item.importance, "spread": item.spread, "inputs": item.inputs}
        for item in importances
    ]
    if as_json:
        report.write_text(_json_text({"loss": baseline, "repeats": repeats, "columns": rows}) + "\n")
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
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port, printed at start).")
    ] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Processes answering requests, sharing the loaded runs.")] = 1,
    max_body: Annotated[
        float,
        typer.Option(
            "--max-body", callback=_above_zero, help="Largest request body, in MB; larger ones are refused (413)."
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
    from . import report
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
