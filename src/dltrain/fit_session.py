"""One fit into a run folder: claim it, train with a checkpoint after every epoch (resumable bit
for bit), and commit the finished run as one unit (``run_fit``; ``api.fit`` is its public face).

Every way a fit can stop (finished, Ctrl-C/SIGTERM/SIGHUP, divergence, a full disk) leaves the
old run, the new one, or a checkpoint with the printed command that resumes it."""

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import signals
from .artifacts import (
    CHECKPOINT,
    CHECKPOINT_FORMAT_VERSION,
    RunTarget,
    claim_run_dir,
    read_checkpoint,
    read_manifest,
    resume_command,
    save_checkpoint,
    save_run,
)
from .build import DeviceChoice, Seeds, build_trainer, choose_device, prepare_fit
from .config import Config, DenseSpec, dump_config, load_config
from .crossval import CrossValidation, cross_validate
from .data.prepare import PreparedData, data_path
from .engine import kernels
from .engine.backend import DEFAULT_DTYPE
from .engine.threads import fused_pays, threads_for
from .errors import (
    ArtifactError,
    ConfigError,
    DltrainError,
    TrainingDiverged,
    TrainingInterrupted,
    signal_of,
)
from .metrics import evaluate_chunks
from .resume import (
    comparable_config,
    data_files,
    data_hashes,
    refuse_changed_config,
    refuse_changed_data,
    restore_checkpoint,
)
from .train import Callbacks, Trainer, history_from_checkpoint


@dataclass
class FitResult:
    run_dir: Path
    config: Config
    history: list
    stop_reason: str
    metrics: dict
    best_epoch: int = 0
    monitor: str = "loss"
    resumed_from: int = 0
    cross_validation: CrossValidation | None = None  # --cv K: the folds' scores, before this run was trained


def _split_metrics(model, loss, data: PreparedData) -> dict:
    """Every split's scores, a chunk of rows at a time (from memory or from the store alike)."""
    task, divisor = data.config.task, data.schema.target_divisor
    splits = (("train", data.train), ("validation", data.validation), ("test", data.test))
    return {
        name: evaluate_chunks(model, loss, split.chunks(), task, target_divisor=divisor)
        for name, split in splits
        if split is not None
    }


def _input_paths(config_path, config: Config, base_dir: Path) -> list[Path]:
    """Every file a fit reads: none of them may live inside the run folder it replaces."""
    paths = [Path(config_path), *data_files(config, base_dir).values()]
    return paths + ([data_path(base_dir, config.data.test)] if config.data.test else [])


def relocate_paths(config: Config, base_dir: Path, run_dir: Path) -> Config:
    """Rewrite data paths relative to the run folder, so its config.yaml trains again as it is."""

    def moved(value):
        if value is None:
            return None
        return os.path.relpath(data_path(base_dir, value).resolve(), run_dir.resolve())

    spec = config.data
    validation = moved(spec.validation) if isinstance(spec.validation, str) else spec.validation
    data = spec.model_copy(update={"train": moved(spec.train), "test": moved(spec.test), "validation": validation})
    return config.model_copy(update={"data": data})


@dataclass
class RunRecord:
    """How the run was made, for model.json: the command line, start and end time, duration."""

    command: list | None
    started: datetime
    clock: float

    @classmethod
    def start(cls, command=None) -> "RunRecord":
        return cls(list(command) if command else None, datetime.now(timezone.utc), time.monotonic())

    def to_dict(self) -> dict:
        return {
            "command": self.command,
            "started": self.started.isoformat(timespec="seconds"),
            "ended": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - self.clock, 3),
        }


@dataclass
class _Session:
    """One fit: what it was asked, what it trains on, and the folder it holds."""

    config_path: Path
    overrides: list
    config: Config
    base_dir: Path
    data: PreparedData
    target: RunTarget
    data_sha256: dict
    record: RunRecord | None = None
    device: DeviceChoice | None = None

    def resume_command(self, overrides=None) -> str:
        return resume_command(
            self.config_path, self.target.directory, self.overrides if overrides is None else overrides
        )

    def save(self, model, loss, history, stop_reason, best_epoch, monitor) -> dict:
        """Evaluate the model on every split and commit the run folder, checkpoint included."""
        metrics = _split_metrics(model, loss, self.data)
        stored = relocate_paths(self.config, self.base_dir, self.target.directory)
        manifest = {
            "config": stored,
            "data": self.data.schema,
            "metrics": metrics,
            "training": {
                "epochs_done": len(history),
                "stop_reason": stop_reason,
                "best_epoch": best_epoch,
                "monitor": monitor,
            },
            "gelu": "exact",  # run folders without it meant the tanh form by gelu (see RunManifest)
            "device": self.device.to_dict() if self.device else None,
            "run": (self.record or RunRecord.start()).to_dict(),
        }
        checkpoint = self.target.checkpoint
        carry = {CHECKPOINT: checkpoint} if checkpoint.exists() else None
        save_run(
            self.target.directory, model.host_params(), manifest, dump_config(stored), history, self.target.lock, carry
        )
        return metrics


class _Checkpointer:
    """Writes the checkpoint after every epoch (atomically), flushing it to disk every few seconds.

    fsync costs tens of milliseconds here, more than an epoch of a small model; renaming
    alone already protects the checkpoint from a crash or Ctrl-C of this process."""

    SYNC_SECONDS = 5.0

    def __init__(self, session: _Session, comparable: dict):
        self.path = session.target.checkpoint
        self.extra = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "config": comparable,
            "config_sha256": hashlib.sha256(json.dumps(comparable, sort_keys=True).encode()).hexdigest(),
            "data_sha256": session.data_sha256,
            "resume": {
                "config": str(Path(session.config_path).resolve()),
                "overrides": list(session.overrides),
                "epochs": session.config.train.epochs,
            },
        }
        self.last_sync = -math.inf

    def __call__(self, trainer: Trainer):
        meta, arrays = trainer.state()
        meta.update(self.extra)
        durable = time.monotonic() - self.last_sync >= self.SYNC_SECONDS or trainer.stop_reason != "running"
        save_checkpoint(self.path, meta, arrays, durable)
        if durable:
            self.last_sync = time.monotonic()


def _make_trainer(session: _Session, seeds: Seeds, comparable: dict, callbacks) -> Trainer:
    trainer = build_trainer(
        session.config,
        session.data,
        seeds,
        callbacks,
        on_epoch_saved=_Checkpointer(session, comparable),
        epoch_end_guard=signals.deferred,  # the checkpoint of an epoch and its line, both or neither
        backend=session.device.backend if session.device else None,
    )
    kernels.warm_up(trainer.kernel_needs(), DEFAULT_DTYPE)  # what the early guess missed, if anything
    return trainer


def _header_columns(path: Path) -> int:
    """The number of columns in a CSV's first line, counted roughly (no quotes, no encoding): 0
    when it cannot be read. Enough to guess a network's width before the file is parsed."""
    try:
        if not path.is_file():  # a FIFO or a device would block or never end
            return 0
        with open(path, "rb") as handle:
            header = handle.readline(1 << 20)
    except OSError:
        return 0
    return max(header.count(delimiter) for delimiter in (b",", b";", b"\t", b"|")) + 1


def _compile_kernels_early(config: Config, base_dir: Path) -> None:
    """Start looking for (and compiling) the fused kernels in the background while the data is
    read, where the network looks large enough to run them (``kernels.warm_up``): on a fresh
    install, compiling them inside the first epoch made the first fit of Fashion-MNIST 3.9 s
    longer than the second. The input width is guessed from the CSV's header and the output
    width as 1; a wrong guess costs only time (the trainer asks again for what it runs)."""
    targets = len(config.data.target) if isinstance(config.data.target, list) else 1
    inputs = len(config.data.features or []) or _header_columns(data_path(base_dir, config.data.train)) - targets
    dense = [layer for layer in config.model.layers if isinstance(layer, DenseSpec)]
    widths = [max(1, inputs), *(layer.units for layer in dense), 1]
    activations = [layer.activation for layer in dense] + ["linear"]
    shapes = list(zip(widths, widths[1:], activations))
    batch_size = config.train.batch_size
    largest = batch_size * max(fan_in * fan_out for fan_in, fan_out, _ in shapes)
    if not fused_pays(largest):
        return
    loss = "cross_entropy" if config.loss == "auto" and config.task != "regression" else config.loss
    needs = kernels.needs_of(shapes, [batch_size], loss, config.optimizer.name)
    if threads_for(largest) == 1:  # the serial versions run
        needs = [(name, 0) for name, _ in needs]
    kernels.warm_up(needs, DEFAULT_DTYPE)


def _save_from_checkpoint(session: _Session, trainer: Trainer, stop_reason: str) -> int:
    """After Ctrl-C or divergence: the run's model becomes the last finished epoch's (0: none yet)."""
    if session.target.replacing or not session.target.checkpoint.exists():
        return 0
    meta, arrays = read_checkpoint(session.target.directory)
    model = trainer.model
    model.load_state({key[len("param/") :]: value for key, value in arrays.items() if key.startswith("param/")})
    session.save(
        model, trainer.loss, history_from_checkpoint(meta, arrays), stop_reason, meta["best"]["epoch"], trainer.monitor
    )
    return meta["epoch"]


def _interrupted(session: _Session, trainer: Trainer, number: int) -> TrainingInterrupted:
    """Ctrl-C, SIGTERM or SIGHUP while training: keep what is finished, say how to go on."""
    directory = session.target.directory
    if session.target.replacing:
        return TrainingInterrupted(
            f"interrupted: {directory} still holds the previous run, unchanged; the new training was discarded", number
        )
    try:
        epoch = _save_from_checkpoint(session, trainer, "interrupted")
    except KeyboardInterrupt:
        return TrainingInterrupted(
            f"interrupted again while saving; {directory} holds the training checkpoint; "
            f"resume with: {session.resume_command()}",
            number,
        )
    if not epoch:
        return TrainingInterrupted("interrupted before the first epoch finished; nothing was saved", number)
    return TrainingInterrupted(
        f"interrupted: {directory} holds the model after epoch {epoch}; resume with: {session.resume_command()}", number
    )


def _diverged(session: _Session, trainer: Trainer, error: TrainingDiverged):
    """Save the last good epoch where there is no old run to keep; the error's hint says where things stand."""
    directory = session.target.directory
    if session.target.replacing:
        error.add_hint(f"{directory} still holds the previous run, unchanged")
        return
    epoch = _save_from_checkpoint(session, trainer, "diverged")
    where = f"{directory} holds the model after epoch {epoch}, the last good one" if epoch else "nothing was saved"
    error.add_hint(where)


def _not_saved(session: _Session) -> str:
    """Where things stand when the final save did not happen."""
    if session.target.replacing:
        return f"{session.target.directory} still holds the previous run, unchanged"
    return (
        f"training finished but the model was not saved; {session.target.directory} holds its "
        f"checkpoint; save the model with: {session.resume_command()}"
    )


def _already_finished(session: _Session, trainer: Trainer, reason: str) -> ConfigError:
    """Resuming a run that stopped on its own: refused, with the change that would train on."""
    epoch, config = trainer.epoch, session.config
    stopping = config.train.early_stopping
    value: int | str
    if reason.startswith("early stop") and stopping is not None:
        patience = stopping.patience
        key, value = "train.early_stopping.patience", patience + max(10, patience)
    elif reason.startswith("converged"):
        key, value = "train.tolerance", "null"
    else:
        key, value = "train.epochs", epoch * 2
    overrides = [item for item in session.overrides if not item.startswith(f"{key}=")] + [f"{key}={value}"]
    if key != "train.epochs" and epoch >= config.train.epochs:
        overrides = [item for item in overrides if not item.startswith("train.epochs=")] + [f"train.epochs={epoch * 2}"]
    how = f"all {epoch} epochs done" if reason == "epochs done" else f"{reason.split(':')[0]} at epoch {epoch}"
    return ConfigError(
        f"{session.target.directory}: already finished ({how}); "
        "the model is untouched. To train on anyway: " + session.resume_command(overrides)
    )


def _committed(directory: Path, trainer: Trainer) -> bool:
    """Whether the folder's saved model is the one the checkpoint's training ended with."""
    try:
        return read_manifest(directory).training.epochs_done == trainer.epoch
    except ArtifactError:
        return False


def _train_and_save(session: _Session, trainer: Trainer, resume: bool) -> FitResult:
    resumed_from = trainer.epoch
    finished = trainer.stopping_reason() if resume else "running"
    if finished != "running":
        if _committed(session.target.directory, trainer):
            raise _already_finished(session, trainer, finished)
        result = trainer.finish()  # the training ended before its model was saved: save it now
    else:
        try:
            result = trainer.run()
        except KeyboardInterrupt as interrupt:
            raise _interrupted(session, trainer, signal_of(interrupt)) from None
        except TrainingDiverged as error:
            _diverged(session, trainer, error)
            raise
        except DltrainError as error:  # the checkpoint could not be written (full disk, ...)
            error.add_hint(
                "training stopped; "
                + (
                    "the previous run is unchanged"
                    if session.target.replacing
                    else f"continue later from the last saved epoch with: {session.resume_command()}"
                )
            )
            raise
    try:
        metrics = session.save(
            trainer.model, trainer.loss, result.history, result.stop_reason, result.best_epoch, result.monitor
        )
    except KeyboardInterrupt as interrupt:
        if session.target.lock.commits:  # the signal came while the commit finished
            raise TrainingInterrupted(
                f"interrupted after saving: {session.target.directory} holds the finished run", signal_of(interrupt)
            ) from None
        raise TrainingInterrupted(f"interrupted while saving: {_not_saved(session)}", signal_of(interrupt)) from None
    except DltrainError as error:
        error.add_hint(_not_saved(session))
        raise
    return FitResult(
        session.target.directory,
        session.config,
        result.history,
        result.stop_reason,
        metrics,
        result.best_epoch,
        result.monitor,
        resumed_from,
    )


def _cross_validate(config: Config, source, base_dir: Path, k: int, target: RunTarget, on_fold) -> CrossValidation:
    """``--cv K`` before the run is trained: nothing is written, so a stop leaves the folder as it was."""
    where = (
        f"{target.directory} still holds the previous run, unchanged"
        if target.replacing
        else "nothing was trained or saved"
    )
    try:
        return cross_validate(config, source, base_dir, k, f"--cv {k}", on_fold=on_fold)
    except KeyboardInterrupt as interrupt:
        raise TrainingInterrupted(
            f"interrupted during the cross-validation (--cv {k}); {where}", signal_of(interrupt)
        ) from None
    except TrainingDiverged as error:
        error.add_hint(f"it happened in the cross-validation (--cv {k}), before the run was trained; {where}")
        raise


def _check_arguments(out, resume: bool, cv: int | None):
    if resume and out is None:
        raise ConfigError("--resume needs --out DIR: the run folder to continue")
    if cv is not None and cv < 2:
        raise ConfigError(f"--cv {cv}: give at least 2 folds")
    if cv is not None and resume:
        raise ConfigError(
            f"--cv {cv} with --resume: cross-validation scores a config before its run trains from the start; "
            "resume without --cv"
        )


def run_fit(
    config_path,
    overrides=(),
    out=None,
    force=False,
    callbacks: Callbacks | None = None,
    on_run_dir=None,
    resume=False,
    command_line=None,
    cv: int | None = None,
    on_fold=None,
    device: str | None = None,
) -> FitResult:
    """Train from a config file and commit the run folder; returns where and how it went.

    With ``resume``, continue the checkpoint in ``out`` up to ``train.epochs``, bit for bit
    as if training had never stopped. ``command_line`` is recorded in model.json. With ``cv``,
    the config is first cross-validated on ``cv`` folds of the training rows (``crossval``;
    ``on_fold(index, result)`` after each fold); the run trained after is the same as without.
    ``device`` (auto, cpu or cuda: --device) replaces ``train.device`` (a checkpoint resumes on
    either device); the device chosen and why go to ``callbacks.on_device`` before training,
    and to model.json."""
    record = RunRecord.start(command_line)
    overrides = list(overrides)
    config, base_dir, source = load_config(config_path, overrides)
    if device is not None:
        config = config.model_copy(update={"train": config.train.model_copy(update={"device": device})})
    _check_arguments(out, resume, cv)
    inputs = _input_paths(config_path, config, base_dir)
    target = claim_run_dir(config.name, out, force, resume, inputs) if out is not None else None
    try:
        _compile_kernels_early(config, base_dir)
        files = data_files(config, base_dir)
        hashes = data_hashes(files)
        checkpoint = read_checkpoint(target.directory) if target is not None and resume else None
        if target is not None and checkpoint:
            refuse_changed_data(checkpoint[0], hashes, files, target.directory)
        config, seeds, data = prepare_fit(config, source, base_dir)
        chosen = choose_device(config, data.schema, len(data.train), source, flag=device is not None)
        comparable = comparable_config(config, base_dir)
        if target is not None and checkpoint:
            refuse_changed_config(checkpoint[0]["config"], comparable, target.directory)
        if target is None:
            target = claim_run_dir(config.name, inputs=inputs)
        if on_run_dir:
            on_run_dir(target.directory)
        cross = _cross_validate(config, source, base_dir, cv, target, on_fold) if cv is not None else None
        session = _Session(Path(config_path), overrides, config, base_dir, data, target, hashes, record, chosen)
        if callbacks is not None:
            callbacks.on_device(chosen.name, chosen.reason)
        trainer = _make_trainer(session, seeds, comparable, callbacks)
        if checkpoint:
            restore_checkpoint(trainer, checkpoint, target.directory)
        result = _train_and_save(session, trainer, resume)
        result.cross_validation = cross
        return result
    finally:
        if target is not None:
            target.release()
