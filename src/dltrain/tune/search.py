"""The whole search: the arguments and data checked, the study opened, this process's worker and
``--workers - 1`` child processes run against it, the study folder written at the end."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import numpy as np

from ..engine.backend import available_cores, blas_threads
from ..errors import ConfigError, DltrainError, TrainingInterrupted, signal_of
from .features import COLUMNS_ATTR, RANKING_ATTR, rank_features, ranking
from .fitting import Fitting
from .space import SearchPlan, check_data, load_plan
from .storage import StudyPlace, check_same_search, database_url, load_optuna, make_study, open_storage
from .study_folder import TuneResult, study_folder, write_study_folder
from .trials import finished_count
from .worker import SafeInterrupts, Worker


def check_search(config_path, data, config) -> SearchPlan:
    """What ``dltrain check`` adds for a config with a tune: section: the search would start."""
    plan = load_plan(config_path)
    check_data(plan, data, config)
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


def child_worker(
    fitting: Fitting,
    config_path,
    place: StudyPlace,
    n_trials: int,
    deadline,
    index: int,
    workers: int,
    trials_before: int,
    errors,
):
    """A local worker process: its own storage connection, its share of the cores, no output."""
    try:
        plan = load_plan(config_path)
        storage = open_storage(place)
        study = _load_study(plan, place, storage, index, trials_before)
        worker = Worker(plan, fitting, study, n_trials, deadline)
        worker.ranking = ranking(study)
        # Ctrl-C reaches a local worker twice (from the terminal, then from the first worker): wait
        # for the safe point both times.
        worker.interrupts = SafeInterrupts(escalate=False)
        with _ThreadShare(workers):
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


def _prepare_search(plan: SearchPlan, fitting: Fitting, n_trials: int):
    """The data parsed once (a probe worker holds it), checked for the search; a grid caps the trials.

    Returns (probe worker, base data, number of trials, notes for the summary)."""
    probe = Worker(plan, fitting, None, n_trials)
    base = probe.data.base()
    check_data(plan, base, fitting.checked(plan.config_with({}), plan.source, base))
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
    return probe, base, n_trials, notes


def _run_workers(worker: Worker, place: StudyPlace, workers: int, trials_before: int, on_stage) -> str:
    """This process's worker and ``workers - 1`` child processes against one study; returns why it stopped."""
    context = multiprocessing.get_context("spawn")
    errors = context.SimpleQueue()
    arguments = (worker.fitting, worker.plan.config_path, place, worker.n_trials, worker.deadline)
    children = [
        context.Process(target=child_worker, daemon=False, args=(*arguments, index, workers, trials_before, errors))
        for index in range(1, workers)
    ]
    on_stage(
        f"searching: {worker.n_trials} trials, {workers} worker{'s' if workers > 1 else ''}, "
        f"study {place.study_name!r} in {place.shown_storage}"
    )
    for child in children:
        child.start()
    try:
        with _ThreadShare(workers):
            stopped = worker.run(wait_for_others=True)
    except BaseException:
        _stop(children)
        raise
    for child in children:
        child.join()
    if not errors.empty():
        raise DltrainError(errors.get())
    return stopped


def _stop(children):
    for child in children:
        if child.is_alive():
            os.kill(child.pid, signal.SIGINT)
    for child in children:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
            child.join()


def _interrupted(interrupt, workers: int, place: StudyPlace, config_path, storage) -> TrainingInterrupted:
    running = "the running trial is" if workers == 1 else "the running trials are"
    return TrainingInterrupted(
        f"interrupted: {running} recorded as failed; {place.study_dir} keeps the finished trials; continue "
        f"with: dltrain tune {config_path} --out {place.study_dir}" + (f" --storage {storage}" if storage else ""),
        signal_of(interrupt),
    )


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
) -> TuneResult:
    """Search the config's ``tune.space`` until the study has N finished trials; returns the summary.

    ``on_trial(trial, counts, n_trials, metric, best_value)`` is called after every trial this process runs, and
    ``on_stage(text)`` before each long step, for the CLI to show progress."""
    _check_arguments(workers, trials, timeout)
    on_stage = on_stage or (lambda text: None)
    plan = load_plan(config_path)
    load_optuna()
    if storage is not None:
        database_url(storage)
    timeout = timeout if timeout is not None else plan.tune.timeout
    deadline = time.time() + timeout if timeout is not None else None
    probe, base, n_trials, notes = _prepare_search(plan, fitting, trials or plan.tune.trials)

    place = StudyPlace(study_folder(plan.config.name, out), storage, study_name or plan.config.name)
    opened = open_storage(place)
    study = make_study(plan, place, opened, 0)
    check_same_search(study, plan, place)
    trials_before = len(study.get_trials(deepcopy=False))
    study = _load_study(plan, place, opened, 0, trials_before)
    worker = Worker(plan, fitting, study, n_trials, deadline, on_trial)
    worker.data = probe.data
    if finished_count(worker.counts()) >= n_trials:
        result = write_study_folder(study, plan, fitting, place, study.user_attrs.get(RANKING_ATTR))
        result.n_trials, result.already_finished, result.notes = n_trials, True, notes
        return result

    if plan.tune.features == "select" and ranking(study) is None:
        on_stage("feature selection: fitting the config as written to rank its columns")
        trainer, data, config, _ = probe.train(plan.config_with({}))
        study.set_user_attr(RANKING_ATTR, rank_features(fitting, trainer, data, config))
        study.set_user_attr(COLUMNS_ATTR, [column.name for column in base.schema.columns])
    worker.ranking = ranking(study)
    try:
        stopped = _run_workers(worker, place, workers, trials_before, on_stage)
    except KeyboardInterrupt as interrupt:
        raise _interrupted(interrupt, workers, place, config_path, storage) from None
    on_stage("training the best trial's config into the study folder")
    result = write_study_folder(study, plan, fitting, place, study.user_attrs.get(RANKING_ATTR))
    result.n_trials, result.stopped, result.notes = n_trials, stopped, notes
    result.overhead_seconds = worker.overhead_seconds
    return result
