"""The commands that write or read a config: init, check, fit, tune, and schema (the config's JSON Schema)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from .app import user_errors
from .options import (
    ConfigArg,
    DataArg,
    DeviceOption,
    ForceOutOption,
    QuietOption,
    QuietReadOption,
    SetOption,
    above_zero,
    device_name,
    refuse_extra_arguments,
)


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
    force: ForceOutOption = False,
    encoding: Annotated[str, typer.Option(help="Text encoding of the CSV, e.g. latin-1.")] = "utf-8",
):
    """Write a commented starter config for a CSV: column types, exclusions, missing values, network.

    Example: dltrain init customers.csv --target churn --out churn.yaml && dltrain fit churn.yaml
    """
    from .. import report
    from ..commands.init import write_starter_config

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


@user_errors
def check(ctx: typer.Context, config: ConfigArg, overrides: SetOption = None, quiet: QuietReadOption = False):
    """Validate a config and its data; print the resolved config and a model summary.

    Example: dltrain check configs/iris.yaml --set train.epochs=50
    """
    from .. import report
    from ..commands.check import check as check_config
    from ..config import dump_config

    refuse_extra_arguments(ctx, overrides)
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
    if plan := result.plan():
        report.console.print(plan, markup=False, soft_wrap=True)
    report.console.print(report.summary_table(result.model.summary()))
    if result.config.tune is not None:
        from ..commands.tune import check_search

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


FitOutOption = Annotated[
    Optional[Path], typer.Option(help="Run folder (default: runs/<name>, or runs/<name>-2 … if taken).")
]
FitForceOption = Annotated[bool, typer.Option("--force", help="Overwrite the run already in --out.")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue the checkpoint in --out up to train.epochs.")]
FoldsOption = Annotated[
    Optional[int],
    typer.Option(
        min=2,
        help="First cross-validate the config on K folds of the training rows and print each metric's "
        "mean ± spread; then train the run as without it.",
        metavar="K",
        show_default=False,
    ),
]


def _show_run_folder(run_dir, quiet: bool):
    from .. import report

    if not quiet:
        report.console.print(f"run folder: {run_dir}", markup=False)


def _show_fold(index, folds, quiet: bool):
    """fit --cv: a heading before the first fold, a line per fold, the table after the last."""
    from .. import report

    if index == 0 and not quiet:
        report.console.print(report.cross_validation_heading(folds), markup=False, soft_wrap=True)
    if not quiet:
        report.console.print(report.cross_validation_line(index, folds), markup=False, soft_wrap=True)
    if index == folds.k - 1:
        report.console.print(report.cross_validation_table(folds))
        if not quiet:
            report.console.print("training the run itself, as without --cv:", markup=False)


@user_errors
def fit(
    ctx: typer.Context,
    config: ConfigArg,
    out: FitOutOption = None,
    overrides: SetOption = None,
    force: FitForceOption = False,
    quiet: QuietOption = False,
    resume: ResumeOption = False,
    cv: FoldsOption = None,
    device: DeviceOption = None,
):
    """Train the network a config describes and save a run folder.

    Ctrl-C, SIGTERM or SIGHUP saves the last finished epoch and prints the command that resumes it (--out DIR --resume).

    With --force the old run stays until the new one is saved.

    Example: dltrain fit configs/iris.yaml --out runs/iris --set train.epochs=100 (or --cv 5 to cross-validate first)
    """
    from .. import report
    from ..commands.fit import fit as fit_config

    refuse_extra_arguments(ctx, overrides)
    reporter = report.TrainingReporter(quiet=quiet)
    try:
        with report.reading(quiet):
            result = fit_config(
                config,
                overrides or [],
                out,
                force,
                reporter,
                on_run_dir=functools.partial(_show_run_folder, quiet=quiet),
                resume=resume,
                command_line=["dltrain", *sys.argv[1:]],
                cv=cv,
                on_fold=functools.partial(_show_fold, quiet=quiet),
                device=device_name(device),
            )
    finally:
        reporter.close()
    for line in report.fit_summary(result):
        report.console.print(line, markup=False)
    report.console.print(report.metrics_table(result.metrics, columns=["loss", *result.config.train.metrics]))
    report.console.print(f"saved {result.run_dir}", markup=False)


TrialsOption = Annotated[
    Optional[int], typer.Option(min=1, help="Finished trials to reach (default: tune.trials).", show_default=False)
]
TimeoutOption = Annotated[
    Optional[float],
    typer.Option(callback=above_zero, help="Seconds for the whole search (default: tune.timeout).", show_default=False),
]
TuneWorkersOption = Annotated[
    int, typer.Option(min=1, help="Worker processes on this machine, each with its share of the cores.")
]
StorageOption = Annotated[
    Optional[str],
    typer.Option(
        help="Shared study storage, e.g. postgresql://USER@HOST/DB (default: a journal file in the study folder).",
        show_default=False,
    ),
]
StudyOption = Annotated[
    Optional[str], typer.Option(help="Study name in the storage (default: the config's name).", show_default=False)
]
StudyOutOption = Annotated[
    Optional[Path], typer.Option(help="Study folder (default: runs/<name>-tune, or -2 … if taken).", show_default=False)
]


def _show_trial(trial, counts, n_trials, metric, best_value, quiet: bool):
    from .. import report

    if not quiet:
        report.console.print(
            report.tune_trial_line(trial, counts, n_trials, metric, best_value), markup=False, soft_wrap=True
        )


def _show_stage(text, quiet: bool):
    from .. import report

    if not quiet:
        report.console.print(text, markup=False, soft_wrap=True)


@user_errors
def tune(
    config: ConfigArg,
    trials: TrialsOption = None,
    timeout: TimeoutOption = None,
    workers: TuneWorkersOption = 1,
    storage: StorageOption = None,
    study: StudyOption = None,
    out: StudyOutOption = None,
    quiet: QuietOption = False,
    device: DeviceOption = None,
):
    """Search the config's tune: section (model, hyperparameters, features) with Optuna.

    Running the same command again (same --out or --storage) continues the study until it has N finished trials.

    The same command on several machines with --storage joins one study.

    Example: dltrain tune configs/iris.yaml --trials 20 --out runs/iris-tune && dltrain fit runs/iris-tune/best.yaml
    """
    from .. import report
    from ..commands.tune import tune as run_tune

    on_trial = functools.partial(_show_trial, quiet=quiet)
    on_stage = functools.partial(_show_stage, quiet=quiet)
    with report.reading(quiet):
        result = run_tune(
            config, trials, timeout, workers, storage, study, out, on_trial, on_stage, device=device_name(device)
        )
    lines, tables, footer = report.tune_summary(result)
    for line in lines:
        report.console.print(line, markup=False, soft_wrap=True)
    for table in tables:
        report.console.print(table)
    for line in footer:
        report.console.print(line, markup=False, soft_wrap=True)


@user_errors
def schema():
    """Print the config's JSON Schema, for editor completion and validation.

    Example: dltrain schema > dltrain.schema.json, then start a config with the line
    # yaml-language-server: $schema=dltrain.schema.json
    """
    import json

    from .. import report
    from ..config import json_schema

    report.write_text(json.dumps(json_schema(), indent=2) + "\n")
