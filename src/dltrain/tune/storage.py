"""The one adapter to Optuna: importing it, its storages, the study, and every use of its private
attributes or version differences (nowhere else in dltrain touches them).

Whatever the storage answers wrongly (a server that stopped, a journal damaged meanwhile, a
full disk) becomes one message naming the storage, its password masked (``credentials``)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DltrainError, StorageError, install_hint
from ..files import disk_error, write_all
from .credentials import masked, scrubbed
from .journal import JOURNAL, JournalError, JournalMutex, check_journal
from .liveness import dead_workers, heartbeat_seconds
from .silence import ServerSilent, SilenceWatch
from .space import SearchPlan

# Modules whose exceptions mean "the storage did not answer as a storage should".
_STORAGE_MODULES = ("optuna.storages", "optuna.study._optimize", "sqlalchemy", "psycopg", "dltrain.tune.silence")


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
    def journal(self) -> Path:
        return self.study_dir / JOURNAL

    @property
    def shown_storage(self) -> str:
        """The storage as it may be shown and stored: the journal's path, or the URL, password masked."""
        return str(self.journal) if self.storage_url is None else masked(self.storage_url)


def database_url(url: str) -> str:
    """The SQLAlchemy URL for a ``--storage`` (PostgreSQL through psycopg 3, or SQLite)."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith("sqlite:///"):
        return url
    raise ConfigError(
        f"--storage {masked(url)!r}: not a storage URL dltrain can use; give "
        "postgresql://USER@HOST/DB (the password through PGPASSWORD or ~/.pgpass), or sqlite:///FILE "
        "for one machine, or leave --storage out for a journal file in the study folder"
    )


def _journal_backend(path: Path):
    """Optuna's journal file, appended under dltrain's ``flock`` (see ``journal``), and flushed to
    disk (fsync) only when a trial is created or changes state.

    Optuna's backend syncs every entry; at about 5 ms a sync here, the per-epoch reports to
    the pruner and the attributes alone cost tens of milliseconds a trial. Unsynced entries
    are still written to the file before the call returns, so a killed worker loses nothing;
    only a machine that loses power can drop the last intermediate values."""
    from optuna.storages.journal import JournalFileBackend

    class JournalFile(JournalFileBackend):
        def append_logs(self, logs):
            payload = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
            try:
                with JournalMutex(path), open(path, "ab") as handle:
                    write_all(handle, payload)
                    handle.flush()
                    if any("state" in log or "datetime_start" in log for log in logs):
                        os.fsync(handle.fileno())
            except OSError as error:
                raise disk_error(error, path) from None

    return JournalFile(str(path))


def journal_op_codes() -> frozenset:
    """The journal operations this Optuna writes and replays."""
    from optuna.storages.journal._storage import JournalOperation

    return frozenset(int(operation) for operation in JournalOperation)


def repair_journal(place: StudyPlace) -> str | None:
    """Check the study's journal before it is read (see ``journal.check_journal``); a note if it was repaired."""
    if place.storage_url is not None:
        return None
    load_optuna()
    return check_journal(place.journal, journal_op_codes())


def _open_journal(place: StudyPlace):
    from optuna.storages.journal import JournalStorage

    try:
        return JournalStorage(_journal_backend(place.journal))
    except DltrainError:
        raise
    except Exception as error:  # Optuna's replay of a record it cannot apply
        raise JournalError(
            f"{place.journal}: Optuna cannot replay this journal ({type(error).__name__}: {error}); "
            "nothing was changed: restore the file from a backup, or start a new study with another --out"
        ) from None


def open_storage(place: StudyPlace):
    """Optuna's own storages: a journal file, or a database with heartbeats and one retry per dead trial."""
    optuna = load_optuna()
    if place.storage_url is None:
        return _open_journal(place)
    url = database_url(place.storage_url)
    engine_kwargs = {}
    if url.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401 - only to say what is missing
        except ImportError:
            raise DltrainError(f"a PostgreSQL storage needs psycopg: {install_hint('tune')}") from None
    interval = heartbeat_seconds()
    if url.startswith("postgresql"):
        # A server that stops answering is noticed within seconds, not at the kernel's TCP timeout:
        # keep-alives, and a connection that does not open within two heartbeats (10 s at most).
        timeouts = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
        connect = max(2, min(10, 2 * interval))
        engine_kwargs = {"connect_args": {"connect_timeout": connect, "tcp_user_timeout": 20000, **timeouts}}
    retry = retry_once()
    # Optuna 4.9 renamed the retry callback and its storage argument; older ones have only the first.
    callback = (
        {"heartbeat_stale_trial_callback": retry}
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
        else {"failed_trial_callback": retry}
    )
    _quiet_heartbeat_threads()
    try:
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=interval, grace_period=2 * interval, **callback
        )
        SilenceWatch(storage.engine, 2 * interval)
        return storage
    except Exception as error:  # sqlalchemy's many connection and URL errors
        raise DltrainError(
            f"--storage {place.shown_storage}: cannot open the study database ({_reason(error, place)}); check "
            "the URL's host, port, user and database name, the password (PGPASSWORD or ~/.pgpass), and "
            "that the server accepts connections"
        ) from None


def _reason(error: BaseException, place: StudyPlace) -> str:
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ServerSilent):  # the first cause says it best
        cause = cause.__cause__ or cause.__context__
    error = cause or error
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    return scrubbed(lines[0] if lines else type(error).__name__, place.storage_url)


def _raised_by_storage(error: BaseException) -> bool:
    optuna = load_optuna()
    if isinstance(error, optuna.exceptions.StorageInternalError):
        return True
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    module = traceback.tb_frame.f_globals.get("__name__", "") if traceback is not None else ""
    return module.startswith(_STORAGE_MODULES)


def storage_failure(error: BaseException, place: StudyPlace) -> DltrainError | None:
    """The message for an error the storage raised (None for any other error)."""
    if isinstance(error, DltrainError) or not isinstance(error, Exception) or not _raised_by_storage(error):
        return None
    if place.storage_url is None:
        return JournalError(
            f"{place.journal}: the study journal cannot be used ({type(error).__name__}: {_reason(error, place)}); "
            "the command stopped. Run it again to see what is wrong with the file"
        )
    return StorageError(
        f"--storage {place.shown_storage}: the study database stopped answering ({_reason(error, place)}); "
        "the finished trials are kept there; run the same command again once the server is back"
    )


@contextlib.contextmanager
def storage_answers(place: StudyPlace):
    """Turn an error raised by the storage inside the block into one message (see ``storage_failure``)."""
    try:
        yield
    except Exception as error:
        failure = storage_failure(error, place)
        if failure is None:
            raise
        raise failure from None


def _quiet_heartbeat_threads():
    """Optuna's heartbeat thread dies on a storage error with a traceback; the main thread reports it."""
    previous = threading.excepthook
    if getattr(previous, "dltrain_quiet", False):
        return

    def hook(arguments):
        if isinstance(arguments.exc_value, Exception) and _raised_by_storage(arguments.exc_value):
            return
        previous(arguments)

    hook.dltrain_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


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


def watch_seconds(study) -> float:
    """How often a training worker looks for dead workers: each second on a journal (a look reads
    the file's new lines), each heartbeat on a database (a look is a query)."""
    return heartbeat_seconds() if isinstance(study._storage, load_optuna().storages.RDBStorage) else 1.0


def study_names(storage) -> list:
    """The names of the studies a storage holds."""
    return [summary.study_name for summary in load_optuna().get_all_study_summaries(storage, include_best_trial=False)]


def make_study(plan: SearchPlan, place: StudyPlace, storage, seed: int):
    """Create or load the study, with the plan's sampler (seeded) and pruner."""
    optuna = load_optuna()
    tune = plan.tune
    sampler = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, constant_liar=True),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "grid": lambda: optuna.samplers.GridSampler(plan.grid_space(), seed=seed),
    }[tune.sampler]()
    # The warm-up (no pruning in a trial's first epochs) is the worker's (worker.PrunerReport), per trial.
    pruner = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
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
            f"--storage {place.shown_storage}: cannot create or load study {place.study_name!r} "
            f"({_reason(error, place)})"
        ) from None
