"""One worker: runs trials of a study in this process, the dataset parsed once and reused."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace

from ..build import Seeds, build_trainer, resolve_config
from ..config import Config
from ..data.prepare import prepare_data
from ..errors import ConfigError, DltrainError, TrainingDiverged
from ..metrics import evaluate
from ..signals import SafePoints
from ..train import Callbacks
from .features import chosen_columns, select_columns
from .liveness import WORKER_ATTR, worker_label
from .space import FEATURES_PARAM, SearchPlan, check_data
from .storage import fail_dead_trials, load_optuna, watch_seconds
from .trials import SURPLUS_ATTR, SurplusTrial, finished_count, is_surplus, is_surplus_number, trial_counts

WAIT_SECONDS = 0.5  # how often a worker with nothing to start looks at the study again
MAX_FAILURES_IN_A_ROW = 5


class PrunerReport(Callbacks):
    """Reports the metric to the pruner after every epoch and stops the trial when told."""

    def __init__(self, trial, metric: str, interrupts: SafePoints, watch: Callable[[], None] | None = None):
        self.trial, self.metric, self.epochs = trial, metric, 0
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


def final_metric(trainer, data, metric: str) -> float:
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


class TrialData:
    """Prepared data per distinct data section (usually one), and per kept column set."""

    def __init__(self, plan: SearchPlan):
        self.plan = plan
        self.select = plan.tune.features == "select"
        self.cache: dict = {}

    def __call__(self, config: Config):
        data_spec = config.data.model_dump(mode="json")
        if self.select:
            data_spec.pop("features")
        key = json.dumps([data_spec, config.seed, config.task, config.loss], sort_keys=True)
        if key not in self.cache:
            base = config
            if self.select:
                update = {"data": config.data.model_copy(update={"features": self.plan.config.data.features})}
                base = config.model_copy(update=update)
            split_rng = Seeds.from_seed(config.seed).split
            self.cache[key] = prepare_data(base, self.plan.source, self.plan.base_dir, split_rng)
        data = self.cache[key]
        if self.select and config.data.features is not None:
            selected = (key, tuple(config.data.features))
            if selected not in self.cache:
                self.cache[selected] = select_columns(data, list(config.data.features))
            data = self.cache[selected]
        return data

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

    def trial_config(self, values: dict, k: int | None) -> Config:
        features = None
        if k is not None:
            features = chosen_columns([column.name for column in self.data.base().schema.columns], self.ranking, k)
        return self.plan.config_with(values, features)

    def train(self, config: Config, trial=None) -> tuple:
        """A trainer for ``config`` in memory; returns (trainer, data, config as resolved, pruner report)."""
        data = self.data(config)
        config = resolve_config(config, self.plan.source, data)
        check_data(self.plan, data, config)  # a trial without validation data could not be scored
        data = replace(data, config=config)
        report = PrunerReport(trial, self.plan.tune.metric, self.interrupts, self.watch) if trial is not None else None
        return build_trainer(config, data, Seeds.from_seed(config.seed), report), data, config, report

    def objective(self, trial) -> float:
        started = time.perf_counter()
        if is_surplus_number(self.study, trial.number, self.n_trials):
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise SurplusTrial()
        trial.set_user_attr(WORKER_ATTR, self.label)
        values = {dimension.key: dimension.suggest(trial) for dimension in self.plan.dimensions}
        k = trial.suggest_int(FEATURES_PARAM, 1, len(self.ranking)) if self.ranking is not None else None
        try:
            trainer, data, config, report = self.train(self.trial_config(values, k), trial)
        except ConfigError as error:
            shown = ", ".join(f"{key}={value!r}" for key, value in trial.params.items())
            raise ConfigError(
                f"trial {trial.number} ({shown}): {error}; change tune.space so that this combination cannot be drawn"
            ) from None
        return self._train(trial, trainer, data, report, time.perf_counter() - started)

    def _train(self, trial, trainer, data, report, setup: float) -> float:
        optuna = load_optuna()
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
        metric = self.plan.tune.metric
        value = final_metric(trainer, data, metric)
        self._finish(trial, report, training_started, setup)
        if not math.isfinite(value):  # e.g. roc_auc with one class in the validation rows
            trial.set_user_attr("failed_because", f"{metric} is {value}")
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
