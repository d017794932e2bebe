"""The study folder: trials.csv, study.json, best.yaml, best/ (and importance.csv), and the summary."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shlex
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import LOCK, RunLock, holds_run, numbered_folder
from ..artifacts import foreign_entries as run_foreign_entries
from ..config import dump_config
from ..errors import ArtifactError, DltrainError, TrainingInterrupted, signal_of
from ..files import atomic_write, disk_error, read_regular
from .features import COLUMNS_ATTR, chosen_columns, importance_csv, without_dropped_settings
from .fitting import Fitting
from .journal import JOURNAL, JOURNAL_LOCK
from .liveness import process_exists
from .space import FEATURES_PARAM, SearchPlan
from .storage import StudyPlace, load_optuna
from .trials import FOLDS_ATTR, NETWORK_ATTR, SPREAD_ATTR, complete_trials, is_surplus, trial_counts


@dataclass
class TuneResult:
    study_dir: Path
    study_name: str
    storage: str
    metric: str
    direction: str
    n_trials: int
    counts: dict
    already_finished: bool = False
    stopped: str = "done"
    best: dict | None = None  # number, value, params
    top: list = field(default_factory=list)
    param_importance: dict = field(default_factory=dict)
    features: list | None = None  # the ranking, when features are selected
    best_run: Path | None = None
    overhead_seconds: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    cv: int | None = None  # tune.cv: each value is a mean over this many folds


# What a study folder may hold: the files tune writes, plot's figure of it, and best/ (a run folder).
STUDY_FILES = ("journal.log", "trials.csv", "study.json", "best.yaml", "importance.csv", "best")
DERIVED_FILES = ("study.png", "study.svg", "study.pdf")
STUDY_JSON = "study.json"
STUDY_JSON_LIMIT = 1 << 20
_BEST_STAGING = ".best-"


def _ours(name: str) -> bool:
    """Hidden entries dltrain leaves: the folder's lock, the journal's, temporaries, best/ being trained."""
    return (
        name in (LOCK, JOURNAL_LOCK, JOURNAL + ".lock")
        or (name.startswith(".") and name.endswith(".tmp"))
        or name.startswith(_BEST_STAGING)
    )


def foreign_entries(directory: Path) -> list[str]:
    """What in ``directory`` is not part of a dltrain study (a user's config, data, notes)."""
    visible = sorted(name for name in os.listdir(directory) if not _ours(name))
    if not visible:
        return []
    if STUDY_JSON not in visible and JOURNAL not in visible:
        return visible  # not a study: nothing in it is ours
    foreign = [name for name in visible if name not in STUDY_FILES + DERIVED_FILES]
    best = directory / "best"
    if os.path.lexists(best):
        if not best.is_dir() or best.is_symlink():
            foreign.append("best (not a run folder)")
        else:
            foreign += [f"best/{name}" for name in run_foreign_entries(best)]
    return foreign


def _refuse_foreign(directory: Path):
    foreign = foreign_entries(directory)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ArtifactError(
            f"{directory}: holds files that are not part of a dltrain study ({shown}); tune writes "
            "trials.csv, best.yaml and best/ there and would replace them, so choose a new or empty --out"
        )


def _stored_study(directory: Path) -> dict | None:
    path = directory / STUDY_JSON
    if not os.path.lexists(path):
        return None
    payload = read_regular(path, ArtifactError, kind="study description", limit=STUDY_JSON_LIMIT)
    try:
        stored = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        stored = None
    if not isinstance(stored, dict) or not isinstance(stored.get("study"), str):
        raise ArtifactError(
            f"{path}: damaged (not a study description dltrain wrote); move it away or choose another --out"
        )
    return stored


def _refuse_other_study(directory: Path, study_name: str):
    """One study per folder: its files (trials.csv, best.yaml, best/) are one study's."""
    stored = _stored_study(directory)
    if stored is not None and stored["study"] != study_name:
        raise ArtifactError(
            f"{directory}: holds study {stored['study']!r} (see {STUDY_JSON}), not {study_name!r}; a study "
            f"folder holds one study: continue that one with --study {stored['study']}, or choose another --out"
        )


def _remove_stale_best(directory: Path):
    """best/ folders being trained by processes that died (kill -9, power loss)."""
    for entry in directory.iterdir():
        pid = entry.name.rsplit("-", 1)[-1]
        if entry.name.startswith(_BEST_STAGING) and pid.isdigit() and not process_exists(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


class StudyFolder:
    """The study folder, held (shared with other tune commands on the same study) for the whole command."""

    def __init__(self, directory: Path, created: bool):
        self.directory, self.created = Path(directory), created
        self.lock = RunLock(directory, command="tune", shared=True)

    def release(self):
        empty = self.created and set(os.listdir(self.directory)) <= {LOCK}
        self.lock.release()
        if empty:
            shutil.rmtree(self.directory, ignore_errors=True)  # nothing was written: leave no empty folder


def claim_study_folder(name: str, study_name: str, out=None, runs_root="runs") -> StudyFolder:
    """``--out`` (made if missing; a run folder, anything not a study, another study or a folder
    another command writes are refused), else a free ``runs/<name>-tune[-k]``; locked."""
    if out is None:
        folder = StudyFolder(numbered_folder(Path(runs_root), f"{name}-tune"), created=True)
        folder.lock.acquire()
        return folder
    directory = Path(out)
    if directory.exists() and not directory.is_dir():
        raise ArtifactError(f"{directory}: exists and is not a folder; choose another --out")
    if holds_run(directory):
        raise ArtifactError(f"{directory}: holds a run of `dltrain fit`, not a study; choose another --out")
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise disk_error(error, directory) from None
    folder = StudyFolder(directory, created)
    folder.lock.acquire()
    try:
        _refuse_foreign(directory)
        _refuse_other_study(directory, study_name)
        _remove_stale_best(directory)
    except BaseException:
        folder.release()
        raise
    return folder


def trials_csv(study, plan: SearchPlan) -> str:
    """One row per trial: its value (under tune.cv the mean over the folds, then their spread and
    each fold's value), the parameters drawn, the network trained when the space changes it, the
    epochs (the first fold's) and the seconds."""
    keys = plan.parameter_keys
    folds = [f"fold_{index}" for index in range(1, (plan.tune.cv or 0) + 1)]
    network = plan.network_of(plan.config) is not None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["number", "state", "value", *(["spread", *folds] if folds else []), *keys]
    writer.writerow([*header, *(["network"] if network else []), "epochs", "seconds"])
    for trial in study.get_trials(deepcopy=False):
        if is_surplus(trial):
            continue
        value = trial.value if trial.state.name in ("COMPLETE", "PRUNED") else None
        row = [trial.number, trial.state.name.lower(), "" if value is None else repr(float(value))]
        if folds:
            values = trial.user_attrs.get(FOLDS_ATTR) or []
            spread = trial.user_attrs.get(SPREAD_ATTR)
            row += ["" if spread is None else repr(float(spread))]
            row += [repr(float(values[index])) if index < len(values) else "" for index in range(len(folds))]
        row += [trial.params.get(key, "") for key in keys]
        row += [trial.user_attrs.get(NETWORK_ATTR, "")] if network else []
        writer.writerow([*row, trial.user_attrs.get("epochs", ""), trial.user_attrs.get("seconds", "")])
    return buffer.getvalue()


def best_config_yaml(study, plan: SearchPlan, fitting: Fitting, study_dir: Path, ranking: list | None) -> str:
    """A complete config of the best trial, paths relative to the study folder, with a comment naming it."""
    best = study.best_trial
    k = best.params.get(FEATURES_PARAM)
    features = chosen_columns(study.user_attrs[COLUMNS_ATTR], ranking, k) if k is not None else None
    config = plan.config_with(plan.values_of(best.params), features)
    if features is not None:
        config = without_dropped_settings(config, features)
    config = config.model_copy(update={"tune": None})
    config = fitting.relocate(config, plan.base_dir, study_dir)
    value = f"{plan.tune.metric} = {best.value:.6g}"
    if plan.tune.cv:
        value += f" (mean of {plan.tune.cv} folds, spread {best.user_attrs.get(SPREAD_ATTR, math.nan):.3g})"
    comment = (
        f"# best of study {study.study_name!r}: trial {best.number}, {value}\n"
        f"# from {plan.config_path}; train it with: dltrain fit best.yaml\n"
    )
    return comment + dump_config(config)


def _read_text(path: Path) -> str | None:
    """A small file of the study folder as text; None when it is not what tune wrote."""
    try:
        return read_regular(path, ArtifactError, kind="study file", limit=STUDY_JSON_LIMIT * 16).decode("utf-8")
    except (ArtifactError, UnicodeDecodeError):
        return None


def _param_importance(study) -> dict:
    optuna = load_optuna()
    complete = [trial for trial in study.get_trials(deepcopy=False) if trial.state.name == "COMPLETE"]
    if len(complete) < 2 or not complete[0].params:
        return {}
    try:
        with warnings.catch_warnings():  # "quantiles select the same set of trials": few trials, said by the table
            warnings.simplefilter("ignore")
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except Exception:  # too few distinct trials for the evaluator: leave the table out
        return {}


def _train_best(fitting: Fitting, best_yaml: Path, best_dir: Path, again: str):
    """Train best.yaml into a folder of its own, then swap it in for best/: a reader, or another
    command ending the same study, never sees a half-written best/. Interrupted, it leaves no
    hidden folder behind and says how to rebuild best/."""
    fresh = best_dir.with_name(f"{_BEST_STAGING}{os.getpid()}")
    shutil.rmtree(fresh, ignore_errors=True)
    try:
        fitting.fit(best_yaml, fresh)
    except (KeyboardInterrupt, TrainingInterrupted) as interrupt:
        shutil.rmtree(fresh, ignore_errors=True)
        number = signal_of(interrupt) if isinstance(interrupt, KeyboardInterrupt) else interrupt.exit_code - 128
        raise TrainingInterrupted(
            f"interrupted while training {best_dir} again: the study and {best_yaml} are complete, "
            f"{best_dir} was left as it was; rebuild it with: {again}",
            number,
        ) from None
    except DltrainError as error:  # best.yaml refused, the disk full, the training diverged …
        shutil.rmtree(fresh, ignore_errors=True)
        rebuild = ["dltrain", "fit", str(best_yaml), "--out", str(best_dir)] + (
            ["--force"] if holds_run(best_dir) else []
        )
        error.add_hint(
            f"the search is complete and its files are kept in {best_dir.parent} (journal, trials.csv, study.json, "
            f"best.yaml); only {best_dir} could not be trained (it was left as it was). Rebuild it alone with: "
            f"{shlex.join(rebuild)}"
        )
        raise
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    old = best_dir.with_name(f"{_BEST_STAGING}old-{os.getpid()}")
    try:
        if best_dir.exists():
            best_dir.rename(old)
        fresh.rename(best_dir)
    except OSError:  # another process put its best/ (the same trial, trained the same way) in place
        pass
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(fresh, ignore_errors=True)


def write_study_json(plan: SearchPlan, place: StudyPlace, best: dict | None = None):
    """study.json: which study the folder holds (written first, so a second study is refused at
    once), how each parameter is searched (for ``dltrain plot``), and at the end the best trial."""
    atomic_write(place.study_dir / STUDY_JSON, _study_json(plan, place, best), durable=False)


def _study_json(plan: SearchPlan, place: StudyPlace, best: dict | None) -> str:
    fields = {
        "study": place.study_name,
        "storage": place.shown_storage,
        "metric": plan.tune.metric,
        "direction": plan.direction,
        "config": str(plan.config_path),
        "cv": plan.tune.cv,
        "parameters": plan.parameters(),
    }
    if best is not None:
        fields["best"] = best
    return json.dumps(fields, indent=2) + "\n"


def _summary_of(trial) -> dict:
    """A complete trial as the summary and study.json show it."""
    summary = {
        "number": trial.number,
        "value": trial.value,
        "params": dict(trial.params),
        "epochs": trial.user_attrs.get("epochs"),
        "network": trial.user_attrs.get(NETWORK_ATTR),
    }
    if SPREAD_ATTR in trial.user_attrs:
        summary.update(spread=trial.user_attrs[SPREAD_ATTR], folds=trial.user_attrs.get(FOLDS_ATTR))
    return summary


def _best_of(study, plan: SearchPlan, result: TuneResult):
    result.best = _summary_of(study.best_trial)
    result.top = [_summary_of(trial) for trial in complete_trials(study, plan.direction)[:5]]
    result.param_importance = _param_importance(study)


def write_study_folder(
    study, plan: SearchPlan, fitting: Fitting, place: StudyPlace, ranking_rows: list | None, again: str
) -> TuneResult:
    """trials.csv, best.yaml and best/ (the best trial trained again into a run folder), and the summary."""
    study_dir = place.study_dir
    counts = trial_counts(study)
    result = TuneResult(study_dir, place.study_name, place.shown_storage, plan.tune.metric, plan.direction, 0, counts)
    result.cv = plan.tune.cv
    atomic_write(study_dir / "trials.csv", trials_csv(study, plan), durable=False)
    if counts["COMPLETE"]:
        _best_of(study, plan, result)
    write_study_json(plan, place, result.best)
    if ranking_rows is not None:
        atomic_write(study_dir / "importance.csv", importance_csv(ranking_rows), durable=False)
        result.features = ranking_rows
    if not counts["COMPLETE"]:
        return result
    ranking = [row["column"] for row in ranking_rows] if ranking_rows else None
    text = best_config_yaml(study, plan, fitting, study_dir, ranking)
    best_yaml = study_dir / "best.yaml"
    unchanged = os.path.lexists(best_yaml) and _read_text(best_yaml) == text
    atomic_write(best_yaml, text)
    best_dir = study_dir / "best"
    if not (unchanged and holds_run(best_dir)):
        _train_best(fitting, best_yaml, best_dir, again)
    result.best_run = best_dir if holds_run(best_dir) else None
    return result
