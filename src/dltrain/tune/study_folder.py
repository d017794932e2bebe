"""The study folder: trials.csv, study.json, best.yaml, best/ (and importance.csv), and the summary."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import holds_run, numbered_folder
from ..config import dump_config
from ..errors import DltrainError
from ..files import atomic_write, disk_error
from .features import COLUMNS_ATTR, chosen_columns, importance_csv
from .fitting import Fitting
from .space import FEATURES_PARAM, SearchPlan
from .storage import StudyPlace, load_optuna
from .trials import complete_trials, is_surplus, trial_counts


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


def study_folder(name: str, out=None, runs_root="runs") -> Path:
    """``--out`` (made if missing; a run folder is refused), else a free ``runs/<name>-tune[-k]``."""
    if out is not None:
        directory = Path(out)
        if directory.exists() and not directory.is_dir():
            raise DltrainError(f"{directory}: exists and is not a folder; choose another --out")
        if holds_run(directory):
            raise DltrainError(f"{directory}: holds a run of `dltrain fit`, not a study; choose another --out")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise disk_error(error, directory) from None
        return directory
    return numbered_folder(Path(runs_root), f"{name}-tune")


def trials_csv(study, plan: SearchPlan) -> str:
    keys = plan.parameter_keys
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", "value", *keys, "epochs", "seconds"])
    for trial in study.get_trials(deepcopy=False):
        if is_surplus(trial):
            continue
        value = trial.value if trial.state.name in ("COMPLETE", "PRUNED") else None
        writer.writerow(
            [
                trial.number,
                trial.state.name.lower(),
                "" if value is None else repr(float(value)),
                *(trial.params.get(key, "") for key in keys),
                trial.user_attrs.get("epochs", ""),
                trial.user_attrs.get("seconds", ""),
            ]
        )
    return buffer.getvalue()


def best_config_yaml(study, plan: SearchPlan, fitting: Fitting, study_dir: Path, ranking: list | None) -> str:
    """A complete config of the best trial, paths relative to the study folder, with a comment naming it."""
    best = study.best_trial
    k = best.params.get(FEATURES_PARAM)
    features = chosen_columns(study.user_attrs[COLUMNS_ATTR], ranking, k) if k is not None else None
    config = plan.config_with(plan.values_of(best.params), features)
    config = config.model_copy(update={"tune": None})
    config = fitting.relocate(config, plan.base_dir, study_dir)
    comment = (
        f"# best of study {study.study_name!r}: trial {best.number}, {plan.tune.metric} = {best.value:.6g}\n"
        f"# from {plan.config_path}; train it with: dltrain fit best.yaml\n"
    )
    return comment + dump_config(config)


def _param_importance(study) -> dict:
    optuna = load_optuna()
    complete = [trial for trial in study.get_trials(deepcopy=False) if trial.state.name == "COMPLETE"]
    if len(complete) < 2 or not complete[0].params:
        return {}
    try:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except Exception:  # too few distinct trials for the evaluator: leave the table out
        return {}


def _train_best(fitting: Fitting, best_yaml: Path, best_dir: Path):
    """Train best.yaml into a folder of its own, then swap it in for best/: a reader, or another
    command ending the same study, never sees a half-written best/."""
    fresh = best_dir.with_name(f".best-{os.getpid()}")
    shutil.rmtree(fresh, ignore_errors=True)
    fitting.fit(best_yaml, fresh)
    old = best_dir.with_name(f".best-old-{os.getpid()}")
    try:
        if best_dir.exists():
            best_dir.rename(old)
        fresh.rename(best_dir)
    except OSError:  # another process put its best/ (the same trial, trained the same way) in place
        pass
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(fresh, ignore_errors=True)


def _study_json(plan: SearchPlan, place: StudyPlace) -> str:
    fields = {
        "study": place.study_name,
        "storage": place.shown_storage,
        "metric": plan.tune.metric,
        "direction": plan.direction,
        "config": str(plan.config_path),
    }
    return json.dumps(fields, indent=2) + "\n"


def _best_of(study, plan: SearchPlan, result: TuneResult):
    best = study.best_trial
    result.best = {"number": best.number, "value": best.value, "params": dict(best.params)}
    result.top = [
        {
            "number": trial.number,
            "value": trial.value,
            "params": dict(trial.params),
            "epochs": trial.user_attrs.get("epochs"),
        }
        for trial in complete_trials(study, plan.direction)[:5]
    ]
    result.param_importance = _param_importance(study)


def write_study_folder(
    study, plan: SearchPlan, fitting: Fitting, place: StudyPlace, ranking_rows: list | None, train_best: bool = True
) -> TuneResult:
    """trials.csv, best.yaml and best/ (the best trial trained again into a run folder), and the summary."""
    study_dir = place.study_dir
    counts = trial_counts(study)
    result = TuneResult(study_dir, place.study_name, place.shown_storage, plan.tune.metric, plan.direction, 0, counts)
    atomic_write(study_dir / "trials.csv", trials_csv(study, plan), durable=False)
    atomic_write(study_dir / "study.json", _study_json(plan, place), durable=False)
    if ranking_rows is not None:
        atomic_write(study_dir / "importance.csv", importance_csv(ranking_rows), durable=False)
        result.features = ranking_rows
    if not counts["COMPLETE"]:
        return result
    _best_of(study, plan, result)
    ranking = [row["column"] for row in ranking_rows] if ranking_rows else None
    text = best_config_yaml(study, plan, fitting, study_dir, ranking)
    best_yaml = study_dir / "best.yaml"
    unchanged = best_yaml.exists() and best_yaml.read_text(encoding="utf-8") == text
    atomic_write(best_yaml, text)
    best_dir = study_dir / "best"
    if train_best and not (unchanged and holds_run(best_dir)):
        _train_best(fitting, best_yaml, best_dir)
    result.best_run = best_dir if holds_run(best_dir) else None
    return result
