"""One worker: runs trials of a study in this process, the dataset parsed once and reused."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace

from ..build import Seeds, build_trainer, resolve_config
from ..config import Config
from ..crossval import mean_and_spread, metric_of
from ..data.prepare import prepare_data, prepare_folds
from ..errors import ConfigError, DltrainError, TrainingDiverged
from ..signals import SafePoints
from ..train import Callbacks
from .features import chosen_columns, select_columns
from .liveness import WORKER_ATTR, worker_label
from .space import FEATURES_PARAM, SearchPlan, check_data
from .storage import fail_dead_trials, load_optuna, watch_seconds
from .trials import (
    FOLDS_ATTR,
    NETWORK_ATTR,
    SPREAD_ATTR,
    SURPLUS_ATTR,
    SurplusTrial,
    finished_count,
    is_surplus,
    is_surplus_number,
    trial_counts,
)

WAIT_SECONDS = 0.5  # how often a worker with nothing to start looks at the study again
MAX_FAILURES_IN_A_ROW = 5


class PrunerReport(Callbacks):
    """Reports the metric to the pruner after every epoch and stops the trial when told, never in
    its first ``warmup`` epochs. Without a trial (the later folds of a cross-validated trial) it
    only takes Ctrl-C at safe points and looks after the other workers."""

    def __init__(
        self,
        trial,
        metric: str,
        interrupts: SafePoints,
        watch: Callable[[], None] | None = None,
        warmup: int = 0,
    ):
        self.trial, self.metric, self.epochs, self.warmup = trial, metric, 0, warmup
        self.interrupts, self.seconds = interrupts, 0.0
        self.watch = watch  # looks for dead workers now and then, also while this trial trains

    def on_epoch_begin(self, epoch):
        self.interrupts.check()

    def on_batch_end(self, epoch, batch, running_loss):
        self.interrupts.check()

    def on_epoch_end(self, epoch, record):
        self.interrupts.check()
        if self.watch is not None:
            self.watch()
        self.epochs = epoch
        value = record.get(self.metric)
        if self.trial is None or value is None or not math.isfinite(value):
            return
        started = time.perf_counter()
        try:
            self.trial.report(value, epoch)
            prune = epoch > self.warmup and self.trial.should_prune()
        finally:
            self.seconds += time.perf_counter() - started  # the search's cost inside training
        if prune:
            from optuna import TrialPruned

            raise TrialPruned(f"pruned at epoch {epoch}")


def pruner_warmup(plan: SearchPlan, config: Config) -> int:
    """Epochs a trial trains before it may be pruned: tune.pruner_warmup, or max(2, epochs // 10)
    of the trial's own epochs (a median pruner with no warm-up stopped most pruned trials after
    their first epoch, when the values say little yet)."""
    if plan.tune.pruner_warmup is not None:
        return plan.tune.pruner_warmup
    return max(2, config.train.epochs // 10)


class TrialData:
    """Prepared data per distinct data section (usually one), and per kept column set: the
    config's own split, and under ``tune.cv`` the K folds."""

    def __init__(self, plan: SearchPlan):
        self.plan = plan
        self.select = plan.tune.features == "select"
        self.cache: dict = {}

    def _prepared(self, config: Config, folds: bool):
        """(cache key, the data of ``config``: a list of folds when ``folds``), every column kept
        when features are selected."""
        data_spec = config.data.model_dump(mode="json")
        if self.select:
            data_spec.pop("features")
        key = json.dumps([data_spec, config.seed, config.task, config.loss, folds], sort_keys=True)
        if key not in self.cache:
            base, plan = config, self.plan
            if self.select:
                update = {"data": config.data.model_copy(update={"features": plan.config.data.features})}
                base = config.model_copy(update=update)
            split_rng = Seeds.from_seed(config.seed).split
            if folds:
                k = plan.tune.cv or 0  # folds are asked for under tune.cv only
                self.cache[key] = prepare_folds(base, plan.source, plan.base_dir, k, split_rng, f"tune.cv: {k}")
            else:
                self.cache[key] = prepare_data(base, plan.source, plan.base_dir, split_rng, in_memory=True)
        return key, self.cache[key]

    def _selected(self, key: str, data, features: list):
        selected = (key, tuple(features))
        if selected not in self.cache:
            self.cache[selected] = select_columns(data, features)
        return self.cache[selected]

    def __call__(self, config: Config):
        """The data of ``config``, split as it says (its validation split)."""
        key, data = self._prepared(config, folds=False)
        if self.select and config.data.features is not None:
            data = self._selected(key, data, list(config.data.features))
        return data

    def folds(self, config: Config) -> list:
        """The K folds of ``config``'s training rows (``tune.cv: K``)."""
        key, folds = self._prepared(config, folds=True)
        if self.select and config.data.features is not None:
            features = list(config.data.features)
            return [self._selected(f"{key}/{index}", fold, features) for index, fold in enumerate(folds)]
        return folds

    def base(self):
        """The data of the config as written."""
        return self(self.plan.config_with({}))


class Worker:
    """Runs trials of one study in this process, the dataset parsed once and reused."""

    def __init__(self, plan: SearchPlan, study, n_trials: int, deadline=None, on_trial=None):
        self.plan, self.study, self.n_trials = plan, study, n_trials
        self.deadline, self.on_trial = deadline, on_trial
        self.ranking: list | None = None
        self.data = TrialData(plan)
        self.label = worker_label()
        self.overhead_seconds: list = []  # per trial run here: everything but training
        self.interrupts = SafePoints()  # Ctrl-C, SIGTERM, SIGHUP: at batch, epoch and trial boundaries only
        self._last_trial, self._failures_in_a_row = None, 0
        self._training_seconds = None
        self._watched: float = -math.inf
        self._watch_every: float | None = None
        # Called before each look at the study (the parent reaps its children there).
        self.between_trials: Callable[[], None] | None = None
        self._reported: set = set()  # trials of other workers whose lines were shown (report_others)

    def trial_config(self, values: dict, k: int | None) -> Config:
        features = None
        if k is not None:
            features = chosen_columns([column.name for column in self.data.base().schema.columns], self.ranking, k)
        return self.plan.config_with(values, features)

    def train(self, config: Config, trial=None, fold: int = 0) -> tuple:
        """A trainer for ``config`` in memory, on its validation split or, under ``tune.cv``, on
        fold ``fold``; returns (trainer, data, config as resolved, pruner report). Only a trial's
        first fold reports to the pruner."""
        data = self.data.folds(config)[fold] if self.plan.tune.cv else self.data(config)
        config = resolve_config(config, self.plan.source, data)
        check_data(self.plan, data, config)  # a trial without validation data could not be scored
        data = replace(data, config=config)
        report = None
        if trial is not None:
            warmup = pruner_warmup(self.plan, config)
            report = PrunerReport(
                trial if fold == 0 else None, self.plan.tune.metric, self.interrupts, self.watch, warmup
            )
        return build_trainer(config, data, Seeds.from_seed(config.seed), report), data, config, report

    def objective(self, trial) -> float:
        started = time.perf_counter()
        if is_surplus_number(self.study, trial.number, self.n_trials):
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise SurplusTrial()
        trial.set_user_attr(WORKER_ATTR, self.label)
        values = {dimension.key: dimension.suggest(trial) for dimension in self.plan.dimensions}
        k = trial.suggest_int(FEATURES_PARAM, 1, len(self.ranking)) if self.ranking is not None else None
        config = self.trial_config(values, k)
        try:
            first = self.train(config, trial)
        except ConfigError as error:
            shown = ", ".join(f"{key}={value!r}" for key, value in trial.params.items())
            raise ConfigError(
                f"trial {trial.number} ({shown}): {error}; change tune.space so that this combination cannot be drawn"
            ) from None
        network = self.plan.network_of(first[2])
        if network is not None:
            trial.set_user_attr(NETWORK_ATTR, network)
        return self._train(trial, config, first, time.perf_counter() - started)

    def _train(self, trial, config: Config, first: tuple, setup: float) -> float:
        """Train the trial (each fold in turn under ``tune.cv``) and return its value: the metric of
        the model as trained, or the mean over the folds (their values and spread kept on the trial)."""
        optuna = load_optuna()
        metric, report = self.plan.tune.metric, first[3]
        training_started = time.perf_counter()
        values = []
        try:
            for fold in range(self.plan.tune.cv or 1):
                trainer, data, _, _ = first if fold == 0 else self.train(config, trial, fold)
                trainer.run()
                values.append(metric_of(trainer, data, metric, fold=bool(self.plan.tune.cv)))
        except optuna.TrialPruned:
            self._finish(trial, report, training_started, setup)
            raise
        except TrainingDiverged as error:
            trial.set_user_attr("diverged", str(error) + (f" (fold {len(values) + 1})" if self.plan.tune.cv else ""))
            self._finish(trial, report, training_started, setup)
            raise optuna.TrialPruned(str(error)) from None
        value, spread = mean_and_spread(values) if self.plan.tune.cv else (values[0], None)
        if self.plan.tune.cv:
            trial.set_user_attr(FOLDS_ATTR, values)
            trial.set_user_attr(SPREAD_ATTR, spread)
        self._finish(trial, report, training_started, setup)
        if not math.isfinite(value):  # e.g. roc_auc with one class in the validation rows
            shown = ", ".join(format(item, ".6g") for item in values)
            trial.set_user_attr(
                "failed_because", f"{metric} is {value}" + (f" (folds: {shown})" if len(values) > 1 else "")
            )
        return value  # Optuna records a non-finite value as a failed trial

    def _finish(self, trial, report, training_started, setup):
        training = time.perf_counter() - training_started
        trial.set_user_attr("epochs", report.epochs)
        trial.set_user_attr("seconds", round(training + setup, 4))
        self._training_seconds = training - report.seconds

    # ------------------------------------------------------------ the loop

    def counts(self) -> dict:
        return trial_counts(self.study)

    def watch(self, always: bool = False):
        """Reap ended children and fail the trials of dead workers: before each look at the study,
        and once a second (a heartbeat, for a database) while a trial trains."""
        now = time.monotonic()
        if self._watch_every is None:
            self._watch_every = watch_seconds(self.study)
        if not always and now - self._watched < self._watch_every:
            return
        self._watched = now
        if self.between_trials is not None:
            self.between_trials()
        fail_dead_trials(self.study)

    def run(self, wait_for_others: bool = True) -> str:
        """Start trials until the study has N finished ones; returns why it stopped."""
        with self.interrupts:
            return self._run(wait_for_others)

    def _run(self, wait_for_others: bool) -> str:
        while True:
            self.interrupts.check()
            loop_started = time.perf_counter()
            self.watch(always=True)
            counts = self.counts()
            finished = finished_count(counts)
            if finished >= self.n_trials:
                return "done"
            if self.deadline is not None and time.time() >= self.deadline:  # wall clock: shared by processes
                return "timeout"
            if finished + counts["RUNNING"] + counts["WAITING"] >= self.n_trials and not counts["WAITING"]:
                if not wait_for_others:
                    return "others running"
                time.sleep(WAIT_SECONDS)  # others run the last trials; retry them if their worker dies
                continue
            self._training_seconds, self._last_trial = None, None
            self.study.optimize(
                self.objective, n_trials=1, catch=(SurplusTrial,), gc_after_trial=False, callbacks=[self._after_trial]
            )
            self._count_failures()
            if self._training_seconds is not None:
                # The search's own cost: looking at the study, asking, building the trial, telling.
                self.overhead_seconds.append(time.perf_counter() - loop_started - self._training_seconds)

    def _count_failures(self):
        """Trials that fail one after another (a metric that is never finite, say) end the search."""
        trial = self._last_trial
        if trial is None or is_surplus(trial):
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
        if self.on_trial is None or is_surplus(trial):
            return
        complete = study.get_trials(deepcopy=False, states=(trial.state.__class__.COMPLETE,))
        best_value = study.best_value if complete else None
        self.on_trial(trial, self.counts(), self.n_trials, self.plan.tune.metric, best_value)

    def report_others(self, workers: tuple):
        """The trial lines of trials that other workers of this command (``workers``: their label
        prefixes, see ``liveness.label_prefix``) finished since the last look, in the order they
        finished: the command shows every trial, not only the ones this process ran."""
        if self.on_trial is None or not workers:
            return
        states = tuple(getattr(load_optuna().trial.TrialState, name) for name in ("COMPLETE", "PRUNED"))
        trials = self.study.get_trials(deepcopy=False, states=states)
        new = [
            trial
            for trial in trials
            if trial.number not in self._reported and str(trial.user_attrs.get(WORKER_ATTR, "")).startswith(workers)
        ]
        if not new:
            return
        counts = self.counts()
        complete = [trial for trial in trials if trial.state.name == "COMPLETE"]
        best_value = self.study.best_value if complete else None
        for trial in sorted(
            new, key=lambda trial: (trial.datetime_complete is None, trial.datetime_complete, trial.number)
        ):
            self._reported.add(trial.number)
            self.on_trial(trial, counts, self.n_trials, self.plan.tune.metric, best_value)
