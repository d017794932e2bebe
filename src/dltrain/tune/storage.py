"""The one adapter to Optuna: importing it, its storages, the study, and every use of its private
attributes or version differences (nowhere else in dltrain touches them)."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DltrainError, install_hint
from .liveness import dead_workers, heartbeat_seconds
from .space import SearchPlan

JOURNAL = "journal.log"


def load_optuna():
    """Optuna, quiet (its log lines and experimental warnings would mix with ours), or one message."""
    try:
        import optuna
    except ImportError:
        raise DltrainError(f"dltrain tune needs Optuna: {install_hint('tune')}") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.logging.disable_default_handler()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


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


def database_url(url: str) -> str:
    """The SQLAlchemy URL for a ``--storage`` (PostgreSQL through psycopg 3, or SQLite)."""
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


def open_storage(place: StudyPlace):
    """Optuna's own storages: a journal file, or a database with heartbeats and one retry per dead trial."""
    optuna = load_optuna()
    if place.storage_url is None:
        from optuna.storages.journal import JournalStorage

        return JournalStorage(_journal_file(place.study_dir / JOURNAL))
    url = database_url(place.storage_url)
    shown = place.shown_storage
    engine_kwargs = {}
    if url.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401 - only to say what is missing
        except ImportError:
            raise DltrainError(f"a PostgreSQL storage needs psycopg: {install_hint('tune')}") from None
        engine_kwargs = {"connect_args": {"connect_timeout": 10}}
    interval = heartbeat_seconds()
    retry = retry_once()
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


def retry_once():
    """Optuna's callback that queues a failed trial's parameters again, at most once."""
    storages = load_optuna().storages
    retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    return retry(max_retry=1)


def fail_dead_trials(study):
    """Fail the running trials whose worker died, and retry each once (Optuna's retry callback).

    A database storage tells by heartbeat; a journal file has none, so a trial started on this
    machine whose worker process is gone is failed here."""
    optuna = load_optuna()
    storage = study._storage
    if isinstance(storage, optuna.storages.RDBStorage):
        optuna.storages.fail_stale_trials(study)
        return
    retry = None
    for trial, label in dead_workers(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))):
        try:
            storage.set_trial_user_attr(trial._trial_id, "failed_because", f"worker {label} died")
            failed = storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            failed = False  # another worker failed it first
        if failed:
            retry = retry or retry_once()
            retry(study, storage.get_trial(trial._trial_id))


def make_study(plan: SearchPlan, place: StudyPlace, storage, seed: int):
    """Create or load the study, with the plan's sampler (seeded) and pruner."""
    optuna = load_optuna()
    tune = plan.tune
    sampler = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, constant_liar=True),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "grid": lambda: optuna.samplers.GridSampler(plan.grid_space(), seed=seed),
    }[tune.sampler]()
    pruner = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3),
        "none": lambda: optuna.pruners.NopPruner(),
    }[tune.pruner]()
    try:
        return optuna.create_study(
            storage=storage,
            study_name=place.study_name,
            direction=plan.direction,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
    except Exception as error:
        raise DltrainError(
            f"--storage {place.shown_storage}: cannot create or load study {place.study_name!r} ({error})"
        ) from None


def check_same_search(study, plan: SearchPlan, place: StudyPlace):
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
