"""`dltrain tune`: model selection, hyperparameter search and feature selection with Optuna.

Every trial is one fit of the config with the sampled values applied as ``--set`` would
apply them, run inside a worker process that parsed the dataset once. Workers share one
Optuna storage: a journal file in the study folder by default, or a PostgreSQL database
(``--storage postgresql://…``) for workers on many machines. Nothing here prints.
"""

from __future__ import annotations

import copy
import csv
import datetime
import io
import json
import math
import multiprocessing
import os
import shutil
import signal
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from ..artifacts import holds_run, numbered_folder
from ..config import (
    Config,
    ConfigSource,
    RangeSpec,
    TuneSpec,
    apply_override,
    build_config,
    closest_match,
    dump_config,
    parse_override,
    read_config_data,
    validation_message,
)
from ..engine.backend import available_cores, blas_threads
from ..errors import ConfigError, DltrainError, Interrupted, TrainingDiverged, TrainingInterrupted, signal_of
from ..files import atomic_write, disk_error
from ..metrics import evaluate, higher_is_better
from ..train import Callbacks
from . import common
from .common import PreparedData, Seeds
from .explain import permutation_importance
from .fit import fit as fit_run

JOURNAL = "journal.log"
FEATURES_PARAM = "features.k"
# Seconds between a worker's heartbeats in a database storage; a trial whose worker is silent
# for twice as long is failed and retried. Tests shorten it through the environment.
HEARTBEAT_SECONDS = 30
_WAIT_SECONDS = 0.5  # how often a worker with nothing to start looks at the study again
_COUNTED = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")
MAX_FAILURES_IN_A_ROW = 5
UNNAMED_GRACE_SECONDS = 60


def _optuna():
    try:
        import optuna
    except ImportError:
        raise DltrainError("dltrain tune needs Optuna: pip install 'dltrain[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.logging.disable_default_handler()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


class _SurplusTrial(Exception):
    """Another worker started the study's last trial first; this one is not run."""


# ---------------------------------------------------------------- the search space


def _label(choice):
    """Optuna stores choices as scalars: a list or mapping (a whole architecture) becomes its JSON."""
    return choice if choice is None or isinstance(choice, (bool, int, float, str)) else json.dumps(choice)


@dataclass
class Dimension:
    """One entry of ``tune.space``: a key path and its range or choices."""

    key: str
    path: tuple
    spec: RangeSpec | list

    @property
    def labels(self) -> list:
        return [_label(choice) for choice in self.spec]

    def suggest(self, trial):
        spec = self.spec
        if isinstance(spec, list):
            labels = self.labels
            return spec[labels.index(trial.suggest_categorical(self.key, labels))]
        if spec.integer:
            return trial.suggest_int(self.key, spec.low, spec.high, step=spec.step or 1, log=spec.log)
        return trial.suggest_float(self.key, float(spec.low), float(spec.high), step=spec.step, log=spec.log)


class _EntrySource(ConfigSource):
    """Points errors about a value from ``tune.space`` at that entry of the config file."""

    def __init__(self, base: ConfigSource, paths: list, where: str):
        super().__init__(base.name, base.positions, {})
        self.base, self.paths, self.entry_where = base, paths, where

    def where(self, path, key=False) -> str:
        if any(tuple(path[: len(prefix)]) == prefix for prefix in self.paths):
            return self.entry_where
        return self.base.where(path, key)


@dataclass
class SearchPlan:
    """A validated search: the config as written, its ``tune:`` section and the space's dimensions."""

    config_path: Path
    base_dir: Path
    source: ConfigSource
    raw: dict
    config: Config
    tune: TuneSpec
    dimensions: list = field(default_factory=list)

    def config_with(self, values: dict, features: list | None = None) -> Config:
        """The config with sampled values applied through the same validation as ``--set``."""
        data = copy.deepcopy(self.raw)
        for dimension in self.dimensions:
            if dimension.key in values:
                apply_override(
                    data,
                    dimension.path,
                    copy.deepcopy(values[dimension.key]),
                    f"{dimension.key}={values[dimension.key]!r}",
                )
        if features is not None:
            data.setdefault("data", {})["features"] = list(features)
        try:
            return Config.model_validate(data)
        except ValidationError as error:
            raise ConfigError(validation_message(error, data, self.source)) from None

    def space_signature(self) -> str:
        return json.dumps(
            {
                "metric": self.tune.metric,
                "features": self.tune.features,
                "space": {
                    key: (entry.model_dump() if isinstance(entry, RangeSpec) else entry)
                    for key, entry in self.tune.space.items()
                },
            },
            sort_keys=True,
        )


def load_plan(config_path) -> SearchPlan:
    """Read a config with a ``tune:`` section and check every entry of its space before any trial."""
    config_path = Path(config_path)
    data, positions = read_config_data(config_path)
    source = ConfigSource(str(config_path), positions, {})
    config = build_config(data, source)
    if config.tune is None:
        raise ConfigError(
            f"{config_path}: no tune: section to search; add one, e.g.\n"
            "tune:\n  metric: val_loss\n  trials: 20\n  space:\n"
            "    optimizer.lr: {low: 1.0e-4, high: 1.0e-1, log: true}\n(see docs/tune.md)"
        )
    if not config.tune.space and config.tune.features != "select":
        raise source.fail(
            ("tune",),
            "nothing to search; give tune.space (e.g. optimizer.lr: "
            "{low: 1.0e-4, high: 1.0e-1, log: true}) or features: select",
            key=True,
        )
    raw = {key: value for key, value in data.items() if key != "tune"}
    plan = SearchPlan(config_path, config_path.parent, source, raw, config, config.tune)
    for key, entry in config.tune.space.items():
        where = source.where(("tune", "space", key), key=True)
        try:
            path, _ = parse_override(f"{key}=0")
        except ConfigError:
            raise ConfigError(
                f"{where}: tune.space: {key!r} is not a key path; write it as --set takes it, "
                "e.g. optimizer.lr or model.layers[0].units"
            ) from None
        if path[0] in ("tune", "name") or path[:2] in (("data", "train"), ("data", "target")):
            raise ConfigError(
                f"{where}: tune.space.{key}: {'.'.join(map(str, path))} cannot be searched; "
                "search model, optimizer, train or data preprocessing settings"
            )
        if isinstance(entry, list):
            labels = [_label(choice) for choice in entry]
            repeated = next((choice for choice, label in zip(entry, labels) if labels.count(label) > 1), None)
            if repeated is not None:
                raise ConfigError(f"{where}: tune.space.{key}: lists {repeated!r} twice; give each choice once")
        plan.dimensions.append(Dimension(key, path, entry))
    for dimension in plan.dimensions:
        _check_dimension(plan, dimension)
    return plan


def _check_dimension(plan: SearchPlan, dimension: Dimension):
    """Every choice and both ends of a range must give a valid config (with each choice of an entry
    that replaces a folder above this one, e.g. whole architectures under model.layers)."""
    where = plan.source.where(("tune", "space", dimension.key), key=True)
    spec = dimension.spec
    values = spec if isinstance(spec, list) else [spec.low, spec.high]
    parents = [
        other
        for other in plan.dimensions
        if isinstance(other.spec, list)
        and len(other.path) < len(dimension.path)
        and dimension.path[: len(other.path)] == other.path
    ]
    bases = [[]] if not parents else [[(parents[0], choice)] for choice in parents[0].spec]
    source = _EntrySource(plan.source, [dimension.path] + [parent.path for parent in parents], where)
    for base in bases:
        for value in values:
            data = copy.deepcopy(plan.raw)
            try:
                for parent, choice in base:
                    apply_override(data, parent.path, copy.deepcopy(choice), parent.key)
                apply_override(data, dimension.path, copy.deepcopy(value), dimension.key)
            except ConfigError as error:
                detail = str(error).split(": ", 1)[-1]
                raise ConfigError(f"{where}: tune.space.{dimension.key}: {detail}") from None
            try:
                Config.model_validate(data)
            except ValidationError as error:
                message = validation_message(error, data, source)
                raise ConfigError(
                    f"{message}\n(the value {value!r} of tune.space.{dimension.key} does not "
                    "give a valid config; change that entry)"
                ) from None


def _check_data(plan: SearchPlan, data: PreparedData, config: Config):
    """The search needs validation data, and a metric that fit logs."""
    if data.validation is None:
        raise plan.source.fail(
            ("data", "validation"),
            "tune scores every trial "
            "on validation data and there is none; set data.validation to a fraction of the "
            "training rows (e.g. 0.2) or to a labelled CSV path",
        )
    names = ["loss", *config.train.metrics]
    logged = names + [f"val_{name}" for name in names]
    metric = plan.tune.metric
    if metric not in logged:
        raise plan.source.fail(
            ("tune", "metric"),
            f"{metric!r} is not logged by "
            f"fit{closest_match(metric, logged)}; logged values: {', '.join(logged)} "
            "(add a metric to train.metrics to log it)",
        )


def check_search(config_path, data: PreparedData, config: Config) -> SearchPlan:
    """What ``dltrain check`` adds for a config with a tune: section: the search would start."""
    plan = load_plan(config_path)
    _check_data(plan, data, config)
    return plan


# ---------------------------------------------------------------- storage


@dataclass
class StudyPlace:
    study_dir: Path
    storage_url: str | None  # None: the journal file in the study folder
    study_name: str

    @property
    def shown_storage(self) -> str:
        if self.storage_url is None:
            return str(self.study_dir / JOURNAL)
        from sqlalchemy.engine import make_url

        return make_url(self.storage_url).render_as_string(hide_password=True)


def _database_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith("sqlite:///"):
        return url
    raise ConfigError(
        f"--storage {url!r}: not a storage URL dltrain can use; give "
        "postgresql://USER@HOST/DB (or sqlite:///FILE for one machine), or leave --storage out "
        "for a journal file in the study folder"
    )


def _journal_file(path: Path):
    """Optuna's journal file, flushed to disk (fsync) when a trial is created or changes state.

    Optuna's backend syncs every entry; at about 5 ms a sync here, the per-epoch reports to
    the pruner and the attributes alone cost tens of milliseconds a trial. Unsynced entries
    are still written to the file before the call returns, so a killed worker loses nothing;
    only a machine that loses power can drop the last intermediate values."""
    from optuna.storages.journal import JournalFileBackend

    try:
        from optuna.storages.journal._file import get_lock_file
    except ImportError:  # another Optuna layout: its own backend, syncing every entry
        return JournalFileBackend(str(path))

    class JournalFile(JournalFileBackend):
        def append_logs(self, logs):
            with get_lock_file(self._lock):
                with open(self._file_path, "ab") as handle:
                    handle.write(
                        ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
                    )
                    handle.flush()
                    if any("state" in log or "datetime_start" in log for log in logs):
                        os.fsync(handle.fileno())

    return JournalFile(str(path))


def heartbeat_seconds() -> int:
    return int(os.environ.get("DLTRAIN_TUNE_HEARTBEAT", HEARTBEAT_SECONDS))


def open_storage(place: StudyPlace):
    """Optuna's own storages: a journal file, or a database with heartbeats and one retry per dead trial."""
    optuna = _optuna()
    if place.storage_url is None:
        from optuna.storages.journal import JournalStorage

        return JournalStorage(_journal_file(place.study_dir / JOURNAL))
    url = _database_url(place.storage_url)
    shown = place.shown_storage
    engine_kwargs = {}
    if url.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401 - only to say what is missing
        except ImportError:
            raise DltrainError("a PostgreSQL storage needs psycopg: pip install 'dltrain[tune]'") from None
        engine_kwargs = {"connect_args": {"connect_timeout": 10}}
    interval = heartbeat_seconds()
    retry = _retry_once()
    # Optuna 4.9 renamed the retry callback and its storage argument; older ones have only the first.
    callback = (
        {"heartbeat_stale_trial_callback": retry}
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
        else {"failed_trial_callback": retry}
    )
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=interval, grace_period=2 * interval, **callback
        )
    except Exception as error:  # sqlalchemy's many connection and URL errors
        first = str(getattr(error, "orig", None) or error).strip().splitlines()
        reason = first[0] if first else type(error).__name__
        raise DltrainError(
            f"--storage {shown}: cannot open the study database ({reason}); check the URL's "
            "host, port, user, password and database name, and that the server accepts "
            "connections"
        ) from None


def _retry_once():
    """Optuna's callback that queues a failed trial's parameters again, at most once."""
    storages = _optuna().storages
    retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    return retry(max_retry=1)


def _worker_label() -> str:
    """host:pid:start-time; the start time tells a reused process id from the original."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def _alive(label: str) -> bool:
    host, pid, started = (label.split(":") + ["", "", ""])[:3]
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's worker: only a database heartbeat can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started == "?" or _start_time(int(pid)) == started


def fail_dead_trials(study):
    """Fail the running trials whose worker died, and retry each once (Optuna's retry callback).

    A database storage tells by heartbeat; a journal file has none, so a trial started on this
    machine whose worker process is gone is failed here."""
    optuna = _optuna()
    storage = study._storage
    if isinstance(storage, optuna.storages.RDBStorage):
        optuna.storages.fail_stale_trials(study)
        return
    retry = None
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        label = trial.user_attrs.get("worker")
        if label is None:
            # A worker names itself a moment after asking; one killed in between left no name.
            started = trial.datetime_start
            now = datetime.datetime.now(started.tzinfo) if started is not None else None
            if started is None or (now - started).total_seconds() < UNNAMED_GRACE_SECONDS:
                continue
            label = "(unnamed)"
        elif _alive(label):
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "failed_because", f"worker {label} died")
            failed = storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            failed = False  # another worker failed it first
        if failed:
            retry = retry or _retry_once()
            retry(study, storage.get_trial(trial._trial_id))


def _make_study(plan: SearchPlan, place: StudyPlace, storage, seed: int):
    optuna = _optuna()
    tune = plan.tune
    sampler = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, constant_liar=True),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "grid": lambda: optuna.samplers.GridSampler(grid_space(plan), seed=seed),
    }[tune.sampler]()
    pruner = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3),
        "none": lambda: optuna.pruners.NopPruner(),
    }[tune.pruner]()
    direction = "maximize" if higher_is_better(tune.metric) else "minimize"
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=place.study_name,
            direction=direction,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
    except Exception as error:
        raise DltrainError(
            f"--storage {place.shown_storage}: cannot create or load study {place.study_name!r} ({error})"
        ) from None
    return study


def _check_same_search(study, plan: SearchPlan, place: StudyPlace):
    """A study continues only the search it was made for."""
    signature = plan.space_signature()
    stored = study.user_attrs.get("search")
    if stored is None:
        study.set_user_attr("search", signature)
        study.set_user_attr("metric", plan.tune.metric)
    elif stored != signature:
        raise ConfigError(
            f"{plan.config_path}: study {place.study_name!r} in {place.shown_storage} was made for "
            "another tune.metric, tune.features or tune.space; keep them as they were to continue "
            "it, or start a new study with another --out or --study"
        )


def grid_space(plan: SearchPlan) -> dict:
    space = {dimension.key: dimension.labels for dimension in plan.dimensions}
    if plan.tune.features == "select":
        space[FEATURES_PARAM] = list(range(1, len(plan.config.data.features or []) + 1)) or [1]
    return space


def _grid_size(plan: SearchPlan, n_columns: int) -> int:
    size = math.prod(len(dimension.spec) for dimension in plan.dimensions)
    return size * (n_columns if plan.tune.features == "select" else 1)


# ---------------------------------------------------------------- one worker


_SIGNALS = tuple(
    number
    for number in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
    if number is not None
)


class SafeInterrupts:
    """Ctrl-C, SIGTERM and SIGHUP taken at safe points only: inside training or between trials,
    never in the middle of a write to the storage (an interrupted journal write leaves its lock
    behind). A second signal interrupts at once."""

    def __init__(self, escalate: bool = True):
        self.received, self.previous, self.escalate = None, {}, escalate

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {number: signal.signal(number, self._handler) for number in _SIGNALS}
        return self

    def _handler(self, number, frame):
        if self.received is not None and self.escalate:
            raise Interrupted(number)
        self.received = number

    def check(self):
        if self.received is not None:
            raise Interrupted(self.received)

    def __exit__(self, *exc):
        for number, handler in self.previous.items():
            signal.signal(number, handler)


class _PrunerReport(Callbacks):
    """Reports the metric to the pruner after every epoch and stops the trial when told."""

    def __init__(self, trial, metric: str, interrupts: SafeInterrupts):
        self.trial, self.metric, self.epochs = trial, metric, 0
        self.interrupts, self.seconds = interrupts, 0.0

    def on_epoch_begin(self, epoch):
        self.interrupts.check()

    def on_batch_end(self, epoch, batch, running_loss):
        self.interrupts.check()

    def on_epoch_end(self, epoch, record):
        self.interrupts.check()
        self.epochs = epoch
        value = record.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        started = time.perf_counter()
        try:
            self.trial.report(value, epoch)
            prune = self.trial.should_prune()
        finally:
            self.seconds += time.perf_counter() - started  # the search's cost inside training
        if prune:
            from optuna import TrialPruned

            raise TrialPruned(f"pruned at epoch {epoch}")


def _column_blocks(schema, keep: list) -> np.ndarray:
    indices, start = [], 0
    for column in schema.columns:
        if column.name in keep:
            indices.extend(range(start, start + column.width))
        start += column.width
    return np.asarray(indices, dtype=np.intp)


def _select_columns(data: PreparedData, keep: list) -> PreparedData:
    """The prepared data with only the ``keep`` columns' inputs: what a fit with data.features = keep reads."""
    schema = data.schema
    inputs = _column_blocks(schema, keep)
    columns = [column for column in schema.columns if column.name in keep]
    sub_schema = replace(
        schema,
        feature_names=[column.name for column in columns],
        columns=columns,
        offset=schema.offset[inputs],
        divisor=schema.divisor[inputs],
    )

    def cut(split):
        return None if split is None else replace(split, features=np.ascontiguousarray(split.features[:, inputs]))

    return replace(data, schema=sub_schema, train=cut(data.train), validation=cut(data.validation), test=cut(data.test))


class Worker:
    """Runs trials of one study in this process, the dataset parsed once and reused."""

    def __init__(
        self,
        plan: SearchPlan,
        study,
        n_trials: int,
        deadline: float | None = None,
        on_trial=None,
        ranking: list | None = None,
    ):
        self.plan, self.study, self.n_trials = plan, study, n_trials
        self.deadline, self.on_trial = deadline, on_trial
        self.ranking = ranking
        self.select = plan.tune.features == "select"
        self.label = _worker_label()
        self._prepared = {}
        self.overhead_seconds = []  # per trial run here: everything but training
        self.interrupts = SafeInterrupts()
        self._last_trial, self._failures_in_a_row = None, 0

    # ------------------------------------------------------------ data

    def prepared(self, config: Config) -> PreparedData:
        """Prepared data for a config, parsed once per distinct data section (usually once)."""
        data_spec = config.data.model_dump(mode="json")
        if self.select:
            data_spec.pop("features")
        key = json.dumps([data_spec, config.seed, config.task, config.loss], sort_keys=True)
        if key not in self._prepared:
            base = config
            if self.select:
                base = config.model_copy(
                    update={"data": config.data.model_copy(update={"features": self.plan.config.data.features})}
                )
            self._prepared[key] = common.prepare_data(
                base, self.plan.source, self.plan.base_dir, Seeds.from_seed(config.seed)
            )
        data = self._prepared[key]
        if self.select and config.data.features is not None:
            selected = (key, tuple(config.data.features))
            if selected not in self._prepared:
                self._prepared[selected] = _select_columns(data, list(config.data.features))
            data = self._prepared[selected]
        return data

    def trial_config(self, values: dict, k: int | None) -> Config:
        features = None
        if k is not None:
            # The chosen columns in the file's order, so a fit of best.yaml lays out its inputs the same.
            chosen = set(self.ranking[:k])
            features = [column.name for column in self.base_data().schema.columns if column.name in chosen]
        return self.plan.config_with(values, features)

    def base_data(self) -> PreparedData:
        return self.prepared(self.plan.config_with({}))

    # ------------------------------------------------------------ one trial

    def train(self, config: Config, trial=None) -> tuple:
        """A trainer for ``config`` in memory; returns (trainer, data, config as resolved, pruner report)."""
        data = self.prepared(config)
        config = common.resolve_config(config, self.plan.source, data)
        config = common.check_training_options(config, self.plan.source, replace(data, config=config))
        data = replace(data, config=config)
        report = _PrunerReport(trial, self.plan.tune.metric, self.interrupts) if trial is not None else None
        trainer = common.build_trainer(config, data, Seeds.from_seed(config.seed), report)
        return trainer, data, config, report

    def objective(self, trial) -> float:
        optuna = _optuna()
        started = time.perf_counter()
        if self._surplus(trial):
            trial.set_user_attr("surplus", True)
            raise _SurplusTrial()
        trial.set_user_attr("worker", self.label)
        values = {dimension.key: dimension.suggest(trial) for dimension in self.plan.dimensions}
        k = trial.suggest_int(FEATURES_PARAM, 1, len(self.ranking)) if self.ranking is not None else None
        try:
            config = self.trial_config(values, k)
            trainer, data, config, report = self.train(config, trial)
        except ConfigError as error:
            shown = ", ".join(f"{key}={value!r}" for key, value in trial.params.items())
            raise ConfigError(
                f"trial {trial.number} ({shown}): {error}; change tune.space so that this combination cannot be drawn"
            ) from None
        setup = time.perf_counter() - started
        training_started = time.perf_counter()
        try:
            trainer.run()
        except optuna.TrialPruned:
            self._finish(trial, report, training_started, setup)
            raise
        except TrainingDiverged as error:
            trial.set_user_attr("diverged", str(error))
            self._finish(trial, report, training_started, setup)
            raise optuna.TrialPruned(str(error)) from None
        value = _final_metric(trainer, data, self.plan.tune.metric)
        self._finish(trial, report, training_started, setup)
        if not math.isfinite(value):  # e.g. roc_auc with one class in the validation rows
            trial.set_user_attr("failed_because", f"{self.plan.tune.metric} is {value}")
        return value  # Optuna records a non-finite value as a failed trial

    def _finish(self, trial, report, training_started, setup):
        training = time.perf_counter() - training_started
        trial.set_user_attr("epochs", report.epochs)
        trial.set_user_attr("seconds", round(training + setup, 4))
        self._training_seconds = training - report.seconds

    def _surplus(self, trial) -> bool:
        """Workers start trials concurrently; the study's first N active ones by number run."""
        earlier = [
            other
            for other in self.study.get_trials(deepcopy=False)
            if other.number < trial.number and other.state.name in _COUNTED
        ]
        return len(earlier) >= self.n_trials

    # ------------------------------------------------------------ the loop

    def counts(self) -> dict:
        counts = dict.fromkeys(("COMPLETE", "PRUNED", "RUNNING", "WAITING", "FAIL"), 0)
        for trial in self.study.get_trials(deepcopy=False):
            if not trial.user_attrs.get("surplus"):
                counts[trial.state.name] += 1
        return counts

    def run(self, wait_for_others: bool = True) -> str:
        """Start trials until the study has N finished ones; returns why it stopped."""
        with self.interrupts:
            return self._run(wait_for_others)

    def _run(self, wait_for_others: bool) -> str:
        while True:
            self.interrupts.check()
            loop_started = time.perf_counter()
            fail_dead_trials(self.study)
            counts = self.counts()
            finished = counts["COMPLETE"] + counts["PRUNED"]
            if finished >= self.n_trials:
                return "done"
            if self.deadline is not None and time.time() >= self.deadline:  # wall clock: shared by processes
                return "timeout"
            if finished + counts["RUNNING"] + counts["WAITING"] >= self.n_trials and not counts["WAITING"]:
                if not wait_for_others:
                    return "others running"
                time.sleep(_WAIT_SECONDS)  # others run the last trials; retry them if their worker dies
                continue
            self._training_seconds, self._last_trial = None, None
            self.study.optimize(
                self.objective, n_trials=1, catch=(_SurplusTrial,), gc_after_trial=False, callbacks=[self._after_trial]
            )
            self._count_failures()
            if self._training_seconds is not None:
                # The search's own cost: looking at the study, asking, building the trial, telling.
                self.overhead_seconds.append(time.perf_counter() - loop_started - self._training_seconds)

    def _count_failures(self):
        """Trials that fail one after another (a metric that is never finite, say) end the search."""
        trial = self._last_trial
        if trial is None or trial.user_attrs.get("surplus"):
            return
        if trial.state.name != "FAIL":
            self._failures_in_a_row = 0
            return
        self._failures_in_a_row += 1
        if self._failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            reason = trial.user_attrs.get("failed_because", "see trials.csv")
            raise DltrainError(
                f"{MAX_FAILURES_IN_A_ROW} trials failed in a row, the last (trial {trial.number}) "
                f"because {reason}; check tune.metric and tune.space"
            )

    def _after_trial(self, study, trial):
        self._last_trial = trial
        if self.on_trial is None or trial.user_attrs.get("surplus"):
            return
        complete = study.get_trials(deepcopy=False, states=(trial.state.__class__.COMPLETE,))
        best_value = study.best_value if complete else None
        self.on_trial(trial, self.counts(), self.n_trials, self.plan.tune.metric, best_value)


def _final_metric(trainer, data: PreparedData, metric: str) -> float:
    """The metric of the model as trained (best epoch's weights when early stopping restores them)."""
    split = data.validation if metric.startswith("val_") else data.train
    scores = evaluate(
        trainer.model,
        trainer.loss,
        split.features,
        split.targets,
        data.config.task,
        target_divisor=data.schema.target_divisor,
    )
    return float(scores[metric.removeprefix("val_")])


# ---------------------------------------------------------------- feature ranking


def rank_features(worker: Worker) -> list:
    """Fit the config as written, then rank its columns by permutation importance on validation."""
    plan = worker.plan
    trainer, data, config, _ = worker.train(plan.config_with({}))
    trainer.run()
    _, importances = permutation_importance(
        trainer.model, trainer.loss, data.schema, data.validation.features, data.validation.targets, seed=config.seed
    )
    return [{"column": item.column, "importance": item.importance, "spread": item.spread} for item in importances]


def importance_csv(rows: list) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "column", "importance", "spread"])
    for rank, row in enumerate(rows, start=1):
        writer.writerow([rank, row["column"], f"{row['importance']:.6g}", f"{row['spread']:.6g}"])
    return buffer.getvalue()


# ---------------------------------------------------------------- the study folder


def _trial_rows(study, plan: SearchPlan) -> tuple[list, list]:
    keys = [dimension.key for dimension in plan.dimensions]
    if plan.tune.features == "select":
        keys.append(FEATURES_PARAM)
    header = ["number", "state", "value", *keys, "epochs", "seconds"]
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("surplus"):
            continue
        value = trial.value if trial.state.name in ("COMPLETE", "PRUNED") else None
        rows.append(
            [
                trial.number,
                trial.state.name.lower(),
                "" if value is None else repr(float(value)),
                *(trial.params.get(key, "") for key in keys),
                trial.user_attrs.get("epochs", ""),
                trial.user_attrs.get("seconds", ""),
            ]
        )
    return header, rows


def trials_csv(study, plan: SearchPlan) -> str:
    header, rows = _trial_rows(study, plan)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _values_of(trial, plan: SearchPlan) -> dict:
    """A trial's parameters as config values (an architecture's JSON label back to its list)."""
    values = {}
    for dimension in plan.dimensions:
        if dimension.key in trial.params:
            label = trial.params[dimension.key]
            values[dimension.key] = (
                dimension.spec[dimension.labels.index(label)] if isinstance(dimension.spec, list) else label
            )
    return values


def best_config_yaml(study, plan: SearchPlan, study_dir: Path, ranking: list | None) -> str:
    """A complete config of the best trial, paths relative to the study folder, with a comment naming it."""
    best = study.best_trial
    k = best.params.get(FEATURES_PARAM)
    features = None
    if k is not None:
        chosen = set(ranking[:k])
        features = [name for name in study.user_attrs["columns"] if name in chosen]
    config = plan.config_with(_values_of(best, plan), features)
    config = config.model_copy(update={"tune": None})
    config = common._relocate_paths(config, plan.base_dir, study_dir)
    comment = (
        f"# best of study {study.study_name!r}: trial {best.number}, {plan.tune.metric} = {best.value:.6g}\n"
        f"# from {plan.config_path}; train it with: dltrain fit best.yaml\n"
    )
    return comment + dump_config(config)


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


def _param_importance(study) -> dict:
    optuna = _optuna()
    complete = [trial for trial in study.get_trials(deepcopy=False) if trial.state.name == "COMPLETE"]
    if len(complete) < 2 or not complete[0].params:
        return {}
    try:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except Exception:  # too few distinct trials for the evaluator: leave the table out
        return {}


def _train_best(best_yaml: Path, best_dir: Path):
    """Train best.yaml into a folder of its own, then swap it in for best/: a reader, or another
    command ending the same study, never sees a half-written best/."""
    fresh = best_dir.with_name(f".best-{os.getpid()}")
    shutil.rmtree(fresh, ignore_errors=True)
    fit_run(best_yaml, out=fresh)
    old = best_dir.with_name(f".best-old-{os.getpid()}")
    try:
        if best_dir.exists():
            best_dir.rename(old)
        fresh.rename(best_dir)
    except OSError:  # another process put its best/ (the same trial, trained the same way) in place
        pass
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(fresh, ignore_errors=True)


def write_study_folder(
    study, plan: SearchPlan, place: StudyPlace, ranking_rows: list | None, train_best: bool = True
) -> TuneResult:
    """trials.csv, best.yaml and best/ (the best trial trained again into a run folder), and the summary."""
    study_dir = place.study_dir
    direction = "maximize" if higher_is_better(plan.tune.metric) else "minimize"
    counts = dict.fromkeys(("COMPLETE", "PRUNED", "RUNNING", "WAITING", "FAIL"), 0)
    for trial in study.get_trials(deepcopy=False):
        if not trial.user_attrs.get("surplus"):
            counts[trial.state.name] += 1
    result = TuneResult(study_dir, place.study_name, place.shown_storage, plan.tune.metric, direction, 0, counts)
    atomic_write(study_dir / "trials.csv", trials_csv(study, plan), durable=False)
    atomic_write(
        study_dir / "study.json",
        json.dumps(
            {
                "study": place.study_name,
                "storage": place.shown_storage,
                "metric": plan.tune.metric,
                "direction": direction,
                "config": str(plan.config_path),
            },
            indent=2,
        )
        + "\n",
        durable=False,
    )
    if ranking_rows is not None:
        atomic_write(study_dir / "importance.csv", importance_csv(ranking_rows), durable=False)
        result.features = ranking_rows
    if not counts["COMPLETE"]:
        return result
    best = study.best_trial
    result.best = {"number": best.number, "value": best.value, "params": dict(best.params)}
    sign = -1 if direction == "maximize" else 1
    complete = sorted(
        (trial for trial in study.get_trials(deepcopy=False) if trial.state.name == "COMPLETE"),
        key=lambda trial: (sign * trial.value, trial.number),
    )
    result.top = [
        {
            "number": trial.number,
            "value": trial.value,
            "params": dict(trial.params),
            "epochs": trial.user_attrs.get("epochs"),
        }
        for trial in complete[:5]
    ]
    result.param_importance = _param_importance(study)
    ranking = [row["column"] for row in ranking_rows] if ranking_rows else None
    text = best_config_yaml(study, plan, study_dir, ranking)
    best_yaml = study_dir / "best.yaml"
    unchanged = best_yaml.exists() and best_yaml.read_text(encoding="utf-8") == text
    atomic_write(best_yaml, text)
    best_dir = study_dir / "best"
    if train_best and not (unchanged and holds_run(best_dir)):
        _train_best(best_yaml, best_dir)
    result.best_run = best_dir if holds_run(best_dir) else None
    return result


# ---------------------------------------------------------------- the command


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


def _sampler_seed(seed: int, worker_index: int, trials_before: int) -> int:
    """One worker on a new study draws exactly the same trials every time; other workers, and later
    runs joining a study, draw other ones rather than repeating the first worker's."""
    return int(np.random.SeedSequence([seed, worker_index, trials_before]).generate_state(1)[0])


def _load_study(plan: SearchPlan, place: StudyPlace, storage, worker_index: int, trials_before: int):
    return _make_study(plan, place, storage, _sampler_seed(plan.config.seed, worker_index, trials_before))


def _thread_share(workers: int) -> int | None:
    """BLAS threads per worker: its share of the cores (None: one worker keeps the default)."""
    if workers <= 1:
        return None
    return max(1, available_cores() // workers)


class _ThreadShare:
    """Keeps every BLAS call of a worker (validation passes included) to its share of the cores.

    Threads, not CPU affinity: on a machine shared with other jobs the scheduler can still move
    a worker to whichever core is free. Without the limit, two workers' idle OpenBLAS threads
    spun on the same two cores and 2 workers were slower than 1."""

    def __init__(self, threads: int | None):
        self.limit = blas_threads(threads) if threads else None

    def __enter__(self):
        if self.limit is not None:
            self.limit.__enter__()

    def __exit__(self, *exc):
        if self.limit is not None:
            self.limit.__exit__(*exc)


def _ranking(study) -> list | None:
    rows = study.user_attrs.get("feature_importance")
    return [row["column"] for row in rows] if rows else None


def _child_worker(
    config_path, place: StudyPlace, n_trials: int, deadline, worker_index: int, workers: int, trials_before: int, errors
):
    """A local worker process: its own storage connection, its share of the cores, no output."""
    try:
        plan = load_plan(config_path)
        storage = open_storage(place)
        study = _load_study(plan, place, storage, worker_index, trials_before)
        worker = Worker(plan, study, n_trials, deadline, ranking=_ranking(study))
        # Ctrl-C reaches a local worker twice (from the terminal, then from the first worker): wait
        # for the safe point both times.
        worker.interrupts = SafeInterrupts(escalate=False)
        with _ThreadShare(_thread_share(workers)):
            worker.run(wait_for_others=False)
    except DltrainError as error:
        errors.put(str(error))
        raise SystemExit(error.exit_code) from None
    except KeyboardInterrupt as interrupt:
        raise SystemExit(128 + signal_of(interrupt)) from None


def _check_arguments(workers: int, trials: int | None, timeout: float | None):
    if workers < 1:
        raise ConfigError(f"--workers {workers}: give at least 1")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials {trials}: give at least 1")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"--timeout {timeout:g}: give a number of seconds above 0")


def _prepare_search(plan: SearchPlan, n_trials: int):
    """The data parsed once (a probe worker holds it), checked for the search; a grid caps the trials.

    Returns (probe worker, base data, number of trials, notes for the summary)."""
    probe = Worker(plan, None, n_trials)
    base = probe.base_data()
    checked = common.check_training_options(
        common.resolve_config(plan.config_with({}), plan.source, base), plan.source, base
    )
    _check_data(plan, base, checked)
    notes = []
    if plan.tune.sampler == "grid":
        if plan.tune.features == "select":
            features = [column.name for column in base.schema.columns]
            plan.config = plan.config.model_copy(
                update={"data": plan.config.data.model_copy(update={"features": features})}
            )
        size = _grid_size(plan, len(base.schema.columns))
        if size < n_trials:
            notes.append(f"the grid has {size} points; searching all of them instead of {n_trials} trials")
            n_trials = size
    return probe, base, n_trials, notes


def _run_workers(config_path, worker, place, n_trials, deadline, workers, trials_before, on_stage) -> bool:
    """This process's worker and ``workers - 1`` child processes against one study; True if stopped early."""
    context = multiprocessing.get_context("spawn")
    errors = context.SimpleQueue()
    children = [
        context.Process(
            target=_child_worker,
            daemon=False,
            args=(config_path, place, n_trials, deadline, index, workers, trials_before, errors),
        )
        for index in range(1, workers)
    ]
    on_stage(
        f"searching: {n_trials} trials, {workers} worker{'s' if workers > 1 else ''}, "
        f"study {place.study_name!r} in {place.shown_storage}"
    )
    for child in children:
        child.start()
    try:
        with _ThreadShare(_thread_share(workers)):
            stopped = worker.run(wait_for_others=True)
    except BaseException:
        _stop(children)
        raise
    for child in children:
        child.join()
    if not errors.empty():
        raise DltrainError(errors.get())
    return stopped


def tune(
    config_path,
    trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    out=None,
    on_trial=None,
    on_stage=None,
) -> TuneResult:
    """Search the config's ``tune.space`` until the study has N finished trials; returns the summary.

    ``on_trial(trial, counts, n_trials, metric, best_value)`` is called after every trial this process runs, and
    ``on_stage(text)`` before each long step, for the CLI to show progress."""
    _check_arguments(workers, trials, timeout)
    on_stage = on_stage or (lambda text: None)
    plan = load_plan(config_path)
    _optuna()
    if storage is not None:
        _database_url(storage)
    timeout = timeout if timeout is not None else plan.tune.timeout
    deadline = time.time() + timeout if timeout is not None else None
    probe, base, n_trials, notes = _prepare_search(plan, trials or plan.tune.trials)

    study_dir = study_folder(plan.config.name, out)
    place = StudyPlace(study_dir, storage, study_name or plan.config.name)
    opened = open_storage(place)
    study = _make_study(plan, place, opened, 0)
    _check_same_search(study, plan, place)
    trials_before = len(study.get_trials(deepcopy=False))
    study = _load_study(plan, place, opened, 0, trials_before)
    worker = Worker(plan, study, n_trials, deadline, on_trial)
    worker._prepared = probe._prepared
    counts = worker.counts()
    if counts["COMPLETE"] + counts["PRUNED"] >= n_trials:
        result = write_study_folder(study, plan, place, study.user_attrs.get("feature_importance"))
        result.n_trials, result.already_finished, result.notes = n_trials, True, notes
        return result

    if plan.tune.features == "select" and _ranking(study) is None:
        on_stage("feature selection: fitting the config as written to rank its columns")
        study.set_user_attr("feature_importance", rank_features(probe))
        study.set_user_attr("columns", [column.name for column in base.schema.columns])
    worker.ranking = _ranking(study)
    try:
        stopped = _run_workers(config_path, worker, place, n_trials, deadline, workers, trials_before, on_stage)
    except KeyboardInterrupt as interrupt:
        running = "the running trial is" if workers == 1 else "the running trials are"
        raise TrainingInterrupted(
            f"interrupted: {running} recorded as failed; {study_dir} keeps the finished trials; continue "
            f"with: dltrain tune {config_path} --out {study_dir}" + (f" --storage {storage}" if storage else ""),
            signal_of(interrupt),
        ) from None
    on_stage("training the best trial's config into the study folder")
    result = write_study_folder(study, plan, place, study.user_attrs.get("feature_importance"))
    result.n_trials, result.stopped, result.notes = n_trials, stopped, notes
    result.overhead_seconds = worker.overhead_seconds
    return result


def _stop(children):
    for child in children:
        if child.is_alive():
            os.kill(child.pid, signal.SIGINT)
    for child in children:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
            child.join()
