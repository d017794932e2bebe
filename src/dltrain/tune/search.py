"""The whole search: the arguments and data checked, the study folder claimed, the study opened,
this process's worker and ``--workers - 1`` child processes run against it, the folder written."""

from __future__ import annotations

import math
import multiprocessing
import os
import shlex
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..build import resolve_config
from ..engine.backend import available_cores, blas_threads
from ..errors import ConfigError, DltrainError, TrainingInterrupted, signal_of
from ..files import human_bytes
from ..signals import SafePoints
from ..system import available_memory
from .credentials import has_secret, without_secrets
from .features import COLUMNS_ATTR, RANKING_ATTR, rank_features, ranking
from .fitting import Fitting
from .identity import check_study_identity, experiment_of
from .liveness import heartbeat_seconds, label_prefix
from .space import SearchPlan, check_data, load_plan
from .storage import (
    StudyPlace,
    database_url,
    load_optuna,
    make_study,
    open_storage,
    repair_journal,
    storage_answers,
    study_names,
)
from .study_folder import TuneResult, claim_study_folder, write_study_folder, write_study_json
from .trials import finished_count
from .worker import Worker

# What one worker process needs at least (the interpreter, NumPy, Optuna, a small dataset).
WORKER_BYTES = 150 * 10**6
CHILD_STOP_SECONDS = 30  # how long a child may take to reach its safe point once asked to stop


def check_search(config_path, data, config) -> SearchPlan:
    """What ``dltrain check`` adds for a config with a tune: section: the search would start."""
    plan = load_plan(config_path)
    check_data(plan, data, config)
    if plan.tune.cv:  # the folds' own rules (rows enough of every class)
        Worker(plan, None, 1).data.folds(plan.config_with({}))
    return plan


def _sampler_seed(seed: int, worker_index: int, trials_before: int) -> int:
    """One worker on a new study draws exactly the same trials every time; other workers, and later
    runs joining a study, draw other ones rather than repeating the first worker's."""
    return int(np.random.SeedSequence([seed, worker_index, trials_before]).generate_state(1)[0])


def _load_study(plan: SearchPlan, place: StudyPlace, storage, worker_index: int, trials_before: int):
    return make_study(plan, place, storage, _sampler_seed(plan.config.seed, worker_index, trials_before))


class _ThreadShare:
    """Keeps every BLAS call of a worker (validation passes included) to its share of the cores.

    Threads, not CPU affinity: on a machine shared with other jobs the scheduler can still move
    a worker to whichever core is free. Without the limit, two workers' idle OpenBLAS threads
    spun on the same two cores and 2 workers were slower than 1."""

    def __init__(self, workers: int):
        # One worker keeps the default; several get their share of the cores each.
        self.limit = blas_threads(max(1, available_cores() // workers)) if workers > 1 else None

    def __enter__(self):
        if self.limit is not None:
            self.limit.__enter__()

    def __exit__(self, *exc):
        if self.limit is not None:
            self.limit.__exit__(*exc)


def child_worker(place: StudyPlace, n_trials: int, deadline, index: int, workers: int, errors):
    """A local worker process: its own storage connection, its share of the cores, no output."""
    config_path, trials_before = errors.config_path, errors.trials_before
    try:
        with storage_answers(place):
            plan = load_plan(config_path, errors.device)
            study = _load_study(plan, place, open_storage(place), index, trials_before)
            worker = Worker(plan, study, n_trials, deadline)
            worker.ranking = ranking(study)
            # Ctrl-C reaches a local worker twice (from the terminal, then from the first worker): wait
            # for the safe point both times.
            worker.interrupts = SafePoints(escalate=False)
            with _ThreadShare(workers):
                worker.run(wait_for_others=False)
    except DltrainError as error:
        errors.queue.put(str(error))
        raise SystemExit(error.exit_code) from None
    except KeyboardInterrupt as interrupt:
        raise SystemExit(128 + signal_of(interrupt)) from None


@dataclass
class _ChildErrors:
    """What every child gets besides its index: where to report, and the study's state at the start."""

    queue: Any
    config_path: Any
    trials_before: int
    device: str | None = None  # --device, for every worker's trials


def check_arguments(plan: SearchPlan, workers: int, trials: int | None, timeout: float | None) -> float | None:
    """Every bound before any process starts; returns the search's timeout (None: no deadline)."""
    if workers < 1:
        raise ConfigError(f"--workers {workers}: give at least 1")
    cores, memory = available_cores(), available_memory()
    limit = max(1, min(cores, memory // WORKER_BYTES))
    if workers > limit:
        raise ConfigError(
            f"--workers {workers}: this machine has {cores} usable core{'s' if cores != 1 else ''} and "
            f"{human_bytes(memory)} of free memory (a worker needs about {human_bytes(WORKER_BYTES)}); "
            f"give at most {limit}"
        )
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials {trials}: give at least 1")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"--timeout {timeout:g}: give a finite number of seconds above 0")
    if timeout is None and plan.tune.timeout is not None and not math.isfinite(plan.tune.timeout):
        raise plan.source.fail(("tune", "timeout"), "give a finite number of seconds above 0, or null for none")
    heartbeat_seconds()  # DLTRAIN_TUNE_HEARTBEAT, checked whatever the storage
    return timeout if timeout is not None else plan.tune.timeout


def _prepare_search(plan: SearchPlan, n_trials: int):
    """The data parsed once (a probe worker holds it), checked for the search; a grid caps the trials.

    Returns (probe worker, base data, the task, number of trials, notes for the summary)."""
    probe = Worker(plan, None, n_trials)
    base = probe.data.base()
    checked = resolve_config(plan.config_with({}), plan.source, base)
    check_data(plan, base, checked)
    if plan.tune.cv:  # the folds' own rules (rows enough of every class), before any trial
        probe.data.folds(plan.config_with({}))
    notes = []
    if plan.tune.sampler == "grid":
        if plan.tune.features == "select":
            features = [column.name for column in base.schema.columns]
            plan.config = plan.config.model_copy(
                update={"data": plan.config.data.model_copy(update={"features": features})}
            )
        size = plan.grid_size(len(base.schema.columns))
        if size < n_trials:
            notes.append(f"the grid has {size} points; searching all of them instead of {n_trials} trials")
            n_trials = size
    return probe, base, checked.task, n_trials, notes


@dataclass
class _Search:
    """One ``dltrain tune`` command under way."""

    plan: SearchPlan
    fitting: Fitting
    place: StudyPlace
    workers: int
    again: str  # the command that continues the study
    notes: list = field(default_factory=list)
    died: list = field(default_factory=list)  # children that died by a signal
    device: str | None = None  # --device


def continue_command(config_path, place: StudyPlace, named: bool) -> str:
    """The command that continues the study, never with a password (PGPASSWORD or ~/.pgpass keep it)."""
    argv = ["dltrain", "tune", str(config_path), "--out", str(place.study_dir)]
    if place.storage_url is not None:
        argv += ["--storage", without_secrets(place.storage_url)]
    if named:
        argv += ["--study", place.study_name]
    command = shlex.join(argv)
    if place.storage_url is not None and has_secret(place.storage_url):
        command += " (with the password in PGPASSWORD or ~/.pgpass, not in the URL)"
    return command


def _reap(search: _Search, children: list):
    """Collect children that ended (no zombie is left to look alive); note the ones a signal killed."""
    for child in children:
        if child.is_alive():  # looks with waitpid, which reaps a child that ended
            continue
        if child.exitcode is not None and child.exitcode < 0 and child.pid not in search.died:
            search.died.append(child.pid)
            name = signal.Signals(-child.exitcode).name
            search.notes.append(f"worker process {child.pid} died ({name}); its trial was failed and retried")


def _run_workers(search: _Search, worker: Worker, trials_before: int, on_stage) -> str:
    """This process's worker and ``workers - 1`` child processes against one study; returns why it stopped."""
    context = multiprocessing.get_context("spawn")
    errors = _ChildErrors(context.SimpleQueue(), search.plan.config_path, trials_before, search.device)
    arguments = (search.place, worker.n_trials, worker.deadline)
    children = [
        context.Process(target=child_worker, daemon=False, args=(*arguments, index, search.workers, errors))
        for index in range(1, search.workers)
    ]
    place = search.place
    on_stage(
        f"searching: {worker.n_trials} trials, {search.workers} worker{'s' if search.workers > 1 else ''}, "
        f"study {place.study_name!r} in {place.shown_storage}"
    )
    for child in children:
        child.start()
    others = tuple(label_prefix(child.pid) for child in children if child.pid is not None)

    def between_trials():
        _reap(search, children)
        worker.report_others(others)  # the children's trial lines, as they finish

    worker.between_trials = between_trials
    try:
        with _ThreadShare(search.workers):
            stopped = worker.run(wait_for_others=True)
    except BaseException:
        _stop(children)
        raise
    for child in children:
        child.join()
    _reap(search, children)
    worker.report_others(others)
    if not errors.queue.empty():
        raise DltrainError(errors.queue.get())
    return stopped


def _stop(children):
    for child in children:
        if child.is_alive():
            os.kill(child.pid, signal.SIGINT)
    for child in children:
        child.join(timeout=CHILD_STOP_SECONDS)
        if child.is_alive():
            child.kill()
            child.join()


def _open_study(search: _Search, task: str):
    """The study, checked to be this search's and this experiment's; the folder's study.json written."""
    plan, place = search.plan, search.place
    note = repair_journal(place)
    if note:
        search.notes.append(note)
    opened = open_storage(place)
    if place.storage_url is None:
        others = [name for name in study_names(opened) if name != place.study_name]
        if others:
            raise ConfigError(
                f"{place.journal}: holds study {others[0]!r}, not {place.study_name!r}; a study folder holds one "
                f"study: continue that one with --study {others[0]}, or choose another --out"
            )
    study = make_study(plan, place, opened, 0)
    check_study_identity(study, plan, place, experiment_of(plan, task))
    write_study_json(plan, place)
    trials_before = len(study.get_trials(deepcopy=False))
    return _load_study(plan, place, opened, 0, trials_before), trials_before


def _search(search: _Search, probe: Worker, task: str, n_trials: int, deadline, on_trial, on_stage) -> TuneResult:
    plan, fitting, place = search.plan, search.fitting, search.place
    study, trials_before = _open_study(search, task)
    worker = Worker(plan, study, n_trials, deadline, on_trial)
    worker.data = probe.data
    if finished_count(worker.counts()) >= n_trials:
        result = write_study_folder(study, plan, fitting, place, study.user_attrs.get(RANKING_ATTR), search.again)
        result.n_trials, result.already_finished, result.notes = n_trials, True, search.notes
        return result
    if plan.tune.features == "select" and ranking(study) is None:
        on_stage("feature selection: fitting the config as written to rank its columns")
        trainer, data, config, _ = probe.train(plan.config_with({}))
        study.set_user_attr(RANKING_ATTR, rank_features(fitting, trainer, data, config))
        study.set_user_attr(COLUMNS_ATTR, [column.name for column in probe.data.base().schema.columns])
    worker.ranking = ranking(study)
    try:
        stopped = _run_workers(search, worker, trials_before, on_stage)
    except KeyboardInterrupt as interrupt:
        running = "the running trial is" if search.workers == 1 else "the running trials are"
        raise TrainingInterrupted(
            f"interrupted: {running} recorded as failed; {place.study_dir} keeps the finished trials; "
            f"continue with: {search.again}",
            signal_of(interrupt),
        ) from None
    on_stage("training the best trial's config into the study folder")
    result = write_study_folder(study, plan, fitting, place, study.user_attrs.get(RANKING_ATTR), search.again)
    result.n_trials, result.stopped, result.notes = n_trials, stopped, search.notes
    result.overhead_seconds = worker.overhead_seconds
    return result


def tune(
    config_path,
    fitting: Fitting,
    trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    out=None,
    on_trial=None,
    on_stage=None,
    device: str | None = None,
) -> TuneResult:
    """Search the config's ``tune.space`` until the study has N finished trials; returns the summary.

    ``on_trial(trial, counts, n_trials, metric, best_value)`` is called after every trial this process runs, and
    ``on_stage(text)`` before each long step, for the CLI to show progress. ``device`` (--device)
    replaces ``train.device`` in every trial: with cuda, the workers share the GPU."""
    on_stage = on_stage or (lambda text: None)
    plan = load_plan(config_path, device)
    timeout = check_arguments(plan, workers, trials, timeout)
    load_optuna()
    if storage is not None:
        database_url(storage)
    deadline = time.time() + timeout if timeout is not None else None
    probe, _, task, n_trials, notes = _prepare_search(plan, trials or plan.tune.trials)
    name = study_name or plan.config.name
    folder = claim_study_folder(plan.config.name, name, out)
    try:
        place = StudyPlace(folder.directory, storage, name)
        search = _Search(plan, fitting, place, workers, continue_command(config_path, place, study_name is not None))
        search.notes, search.device = notes, device
        with storage_answers(place):
            return _search(search, probe, task, n_trials, deadline, on_trial, on_stage)
    finally:
        folder.release()
