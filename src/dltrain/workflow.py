"""The commands' work, one function each: config -> data -> model -> training -> run folder.

Nothing here prints; the CLI renders what these functions return.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from .artifacts import (CHECKPOINT, CHECKPOINT_FORMAT_VERSION, RunTarget, claim_run_dir, read_checkpoint,
                        holds_run, read_manifest, read_run, resume_command, save_checkpoint, save_run)
from .config import DELIMITER_ALIASES, Config, ConfigSource, closest_match, dump_config, load_config
from . import datacache
from .csvio import DELIMITERS, CsvFile
from .data import (ColumnOptions, DataPlan, DataSchema, Split, checked_rows, column_encodings, infer_task,
                   plan_data, read_features, stratified_split, target_labels)
from .errors import (ArtifactError, ConfigError, DataError, DltrainError, TrainingDiverged, TrainingInterrupted,
                     did_you_mean, signal_of)
from .files import available_memory, human_bytes
from .engine.losses import LOSSES, default_loss, make_loss
from .metrics import (CLASSIFICATION_METRICS, DEFAULT_METRICS, REGRESSION_METRICS, class_indices, evaluate,
                      higher_is_better, predicted_classes)
from .engine.model import Sequential
from .engine.optimizers import make_model_optimizer
from .engine.schedules import make_schedule
from .train import Callbacks, EarlyStopping, Trainer, TrainOptions, history_from_checkpoint


@dataclass
class PreparedData:
    config: Config
    schema: DataSchema
    train: Split
    validation: Split | None
    test: Split | None


@dataclass
class Seeds:
    """Independent random streams, all derived from the config's one seed."""

    split: np.random.Generator
    init: np.random.Generator
    shuffle: np.random.Generator
    dropout: np.random.Generator

    @classmethod
    def from_seed(cls, seed: int) -> "Seeds":
        return cls(*(np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(4)))


def _resolve(config: Config, source: ConfigSource, task: str, n_classes: int) -> Config:
    """Fill in every ``auto`` from the data, rejecting combinations that cannot train."""
    def fail(path, message):
        return ConfigError(f"{source.where(path)}: {'.'.join(path)}: {message}")

    loss = default_loss(task, n_classes) if config.loss == "auto" else config.loss
    problem = LOSSES[loss].task_problem(task, n_classes)
    if problem:
        raise fail(("loss",), problem)
    activation = config.model.output.activation
    if activation == "auto":
        activation = LOSSES[loss].default_activation
    problem = LOSSES[loss].activation_problem(activation)
    if problem:
        raise fail(("model", "output", "activation"), problem)
    output = config.model.output.model_copy(update={"activation": activation})
    model = config.model.model_copy(update={"output": output})
    return config.model_copy(update={"task": task, "loss": loss, "model": model})


def resolve_config(config: Config, source: ConfigSource, data: PreparedData) -> Config:
    """A config's ``auto`` settings filled in from data already prepared (for another config)."""
    return _resolve(config, source, data.schema.task, len(data.schema.class_labels))


def _data_path(base_dir: Path, value: str) -> Path:
    """A data path from the config, relative to the config's folder (kept short for messages)."""
    path = Path(value)
    return path if path.is_absolute() else Path(os.path.normpath(base_dir / path))


def _config_data_path(base_dir: Path, value: str, key: str, source: ConfigSource) -> Path:
    """A data path from the config that exists; if not, say where relative paths start."""
    path = _data_path(base_dir, value)
    if not os.path.lexists(path) and not Path(value).is_absolute():  # lexists: never raises (a name too long)
        siblings = [item.name for item in path.parent.iterdir()] if path.parent.is_dir() else []
        raise DataError(f"{source.where(('data', key))}: data.{key}: {path}: file not found"
                        f"{did_you_mean(path.name, siblings)}; paths in a config are relative to the config's "
                        f"folder ({base_dir.as_posix() if str(base_dir) else '.'}), not to where dltrain runs")
    return path


def _data_plan(spec, table: CsvFile, source: ConfigSource) -> DataPlan:
    options = {name: ColumnOptions(column.type, column.missing, column.fill, column.unknown)
               for name, column in spec.columns.items()}
    return plan_data(table, spec.target, spec.features, spec.exclude, options, spec.missing, spec.fill,
                     source.where)


def prepare_data(config: Config, source: ConfigSource, base_dir: Path, seeds: Seeds) -> PreparedData:
    """Read the CSVs, type the columns, resolve ``auto`` settings, split, fit preprocessing on train only."""
    spec = config.data
    table = CsvFile.open(_config_data_path(base_dir, spec.train, "train", source), spec.delimiter, spec.encoding,
                         spec.decimal)
    plan = _data_plan(spec, table, source)
    multi_output = len(plan.targets) > 1
    if multi_output and config.task == "classification":
        raise ConfigError(f"{source.where(('task',))}: task: several targets mean multi-output regression; "
                          "use task: regression (or auto), or give one target")
    target_policies = {plan.target_policy(name) for name in plan.targets}
    if len(target_policies) > 1:
        raise ConfigError(f"{source.where(('data', 'columns'))}: data.columns: give every target the same "
                          "missing policy (error or drop)")
    target_missing = target_policies.pop()
    cache = datacache.cache_folder(base_dir) if spec.cache else None
    columns = datacache.read_columns(table, plan.request(config.task), cache)
    encodings = column_encodings(columns, plan)
    rows = checked_rows(columns, encodings, plan.targets, target_missing, "train")
    rows = np.arange(columns.n_rows) if rows is None else rows

    target = plan.targets[0]
    raw_target = (columns.text[target] if target in columns.text else columns.numbers(target))[rows]
    task = "regression" if multi_output else infer_task(raw_target) if config.task == "auto" else config.task
    labels = target_labels(raw_target) if task == "classification" else None
    n_classes = len(np.unique(labels)) if labels is not None else 0
    if task == "classification" and n_classes < 2:
        raise DataError(f"{table.path}: target {target!r} has only one class "
                        f"({str(labels[0])!r}); a classifier needs at least two")
    config = _resolve(config, source, task, n_classes)

    if isinstance(spec.validation, str):
        train_rows, validation_rows = rows, None
    else:
        if labels is not None and spec.validation > 0:
            classes, counts = np.unique(labels, return_counts=True)
            if counts.min() < 2:
                rare = str(classes[counts.argmin()])
                raise DataError(
                    f"{table.path}: target {target!r}: class {rare!r} has only 1 row; a stratified validation "
                    "split needs at least 2 rows per class. Add rows of it or remove it"
                    + (", set task: regression if the target is a quantity" if config.task == "auto" else "")
                    + ", or give data.validation a CSV file")
        train_positions, validation_positions = stratified_split(labels, len(rows), spec.validation, seeds.split)
        if spec.validation > 0 and len(validation_positions) == 0:
            raise ConfigError(
                f"{source.where(('data', 'validation'))}: data.validation: {spec.validation:g} of {len(rows)} rows "
                f"leaves no validation rows{' once each class is split' if labels is not None else ''}; "
                "raise it, give a CSV file, or set 0 to train without validation")
        train_rows, validation_rows = rows[train_positions], rows[validation_positions]
        if not len(train_rows):
            raise DataError(f"{table.path}: {len(rows)} usable row{'s' if len(rows) != 1 else ''} and data.validation: "
                            f"{spec.validation:g} leave no rows to train on; add rows, or lower data.validation "
                            "(0 trains on every row)")
        if labels is not None and len(np.unique(labels[train_positions])) < 2:
            raise DataError(f"{table.path}: the training split has only one class; lower data.validation")
    csv_options = {"delimiter": spec.delimiter, "decimal": spec.decimal, "encoding": spec.encoding}
    schema = DataSchema.fit(columns, encodings, train_rows, rows, plan.targets, task, spec.scale,
                            target_missing, csv_options, spec.target_scale)
    schema.binary = config.loss == "binary_cross_entropy"
    validation = None
    if isinstance(spec.validation, str):
        validation = Split(*read_features(_config_data_path(base_dir, spec.validation, "validation", source), schema,
                                          with_target=True))
    elif validation_rows is not None and len(validation_rows):
        validation = Split(schema.encode_features(columns, validation_rows),
                           schema.encode_target(columns, validation_rows))
    # Last, as it may reuse the parsed matrix in place instead of copying the training rows.
    train_targets = schema.encode_target(columns, train_rows)
    train = Split(schema.encode_features(columns, train_rows, in_place=True), train_targets)
    test = None
    if spec.test is not None:
        test = Split(*read_features(_config_data_path(base_dir, spec.test, "test", source), schema,
                                    with_target=True))
    return PreparedData(config, schema, train, validation, test)


# Bytes per parameter while training: the float32 weight, its gradient, two optimizer moments,
# and the float64 draw the initializer makes before it is copied in.
_BYTES_PER_PARAMETER = 4 * 4 + 8
_TRAIN_BYTES_PER_UNIT = 4 * 4   # per row of a batch: a layer's output, activation, and their gradients
_PREDICT_BYTES_PER_UNIT = 4 * 2  # per row of a prediction batch: output and activation
_PREDICT_ROWS = 4096             # Sequential.logits' batch


def check_model_memory(config: Config, schema: DataSchema, where, train_rows: int | None = None) -> None:
    """Refuse a model whose parameters (and one batch of activations) exceed the available memory.

    Estimated from the layer sizes before anything is allocated, so ``units: 1000000000000``
    is a message naming the layer instead of a MemoryError. ``train_rows``: the training
    split's size, for the activations of a training batch (None: the model only predicts)."""
    hidden = [layer.model_dump() for layer in config.model.layers]
    shapes = Sequential.dense_shapes(schema.n_inputs, hidden, schema.n_outputs)
    batch = 0
    if train_rows is not None:  # a batch never holds more rows than the training split
        batch = train_rows if config.optimizer.name == "gd" else min(config.train.batch_size, train_rows)
    per_unit = batch * _TRAIN_BYTES_PER_UNIT + _PREDICT_ROWS * _PREDICT_BYTES_PER_UNIT
    sizes = [(index, fan_in, fan_out, (fan_in + 1) * fan_out * _BYTES_PER_PARAMETER + fan_out * per_unit)
             for index, fan_in, fan_out in shapes]
    needed = sum(size for *_, size in sizes)
    available = available_memory()
    if needed <= available:
        return
    index, fan_in, fan_out, size = max(sizes, key=lambda item: item[3])
    if index is None:
        path, layer = ("model", "output"), f"the output layer ({fan_in} inputs x {fan_out} outputs)"
    else:
        path, layer = ("model", "layers", index, "units"), f"dense layer {index} ({fan_in} inputs x {fan_out} units)"
    raise ConfigError(f"{where(path)}: {_dotted_path(path)}: {layer} needs {human_bytes(size)} "
                      f"({(fan_in + 1) * fan_out:,} parameters with their gradients and optimizer state, and a "
                      "batch of activations); the "
                      f"whole model needs {human_bytes(needed)}, more than the {human_bytes(available)} of memory "
                      "available; use fewer units")


def _dotted_path(path) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


def build_model(config: Config, schema: DataSchema, seeds: Seeds | None = None, where=None,
                train_rows: int | None = None) -> Sequential:
    """The network a config describes, for a fitted schema; refused when it cannot fit in memory."""
    check_model_memory(config, schema, where or (lambda path: "config"), train_rows)
    seeds = seeds or Seeds.from_seed(config.seed)
    hidden = [layer.model_dump() for layer in config.model.layers]
    return Sequential.build(schema.n_inputs, hidden, schema.n_outputs, config.model.output.activation,
                            init_rng=seeds.init, dropout_rng=seeds.dropout, output_init=config.model.output.init)


def _relocate_paths(config: Config, base_dir: Path, run_dir: Path) -> Config:
    """Rewrite data paths relative to the run folder, so its config.yaml trains again as it is."""
    def moved(value):
        if value is None:
            return None
        return os.path.relpath(_data_path(base_dir, value).resolve(), run_dir.resolve())

    spec = config.data
    validation = moved(spec.validation) if isinstance(spec.validation, str) else spec.validation
    data = spec.model_copy(update={"train": moved(spec.train), "test": moved(spec.test), "validation": validation})
    return config.model_copy(update={"data": data})


@dataclass
class CheckResult:
    config: Config
    model: Sequential
    data: PreparedData


def check(config_path, overrides=()) -> CheckResult:
    """Validate config and data and build the model, without training."""
    config, base_dir, source = load_config(config_path, overrides)
    seeds = Seeds.from_seed(config.seed)
    data = prepare_data(config, source, base_dir, seeds)
    config = check_training_options(data.config, source, data)
    return CheckResult(config, build_model(config, data.schema, seeds, source.where, len(data.train)), data)


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


def _split_metrics(model, loss, data: PreparedData) -> dict:
    task, divisor = data.config.task, data.schema.target_divisor
    metrics = {"train": evaluate(model, loss, data.train.features, data.train.targets, task, target_divisor=divisor)}
    for name, split in (("validation", data.validation), ("test", data.test)):
        if split is not None:
            metrics[name] = evaluate(model, loss, split.features, split.targets, task, target_divisor=divisor)
    return metrics


def _logged_names(config: Config, has_validation: bool) -> list[str]:
    names = ["loss", *config.train.metrics]
    return names + [f"val_{name}" for name in names] if has_validation else names


def check_training_options(config: Config, source: ConfigSource, data: PreparedData) -> Config:
    """Fill in the logged metrics and check monitors and class weights against the data."""
    task = config.task
    n_classes = len(data.schema.class_labels)
    choices = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    metrics = config.train.metrics if config.train.metrics is not None else DEFAULT_METRICS[task]
    for index, name in enumerate(metrics):
        if name not in choices:
            raise ConfigError(f"{source.where(('train', 'metrics', index))}: train.metrics[{index}]: {name} is not "
                              f"a {task} metric; choose from {', '.join(choices)}")
        if name == "roc_auc" and n_classes != 2:
            raise ConfigError(f"{source.where(('train', 'metrics', index))}: train.metrics[{index}]: roc_auc needs "
                              f"two classes, the target has {n_classes}")
    config = config.model_copy(update={"train": config.train.model_copy(update={"metrics": list(metrics)})})
    logged = _logged_names(config, data.validation is not None)
    monitors = [(("train", "early_stopping", "monitor"), config.train.early_stopping)]
    if config.optimizer.schedule.name == "plateau":
        monitors.append((("optimizer", "schedule", "monitor"), config.optimizer.schedule))
    for path, spec in monitors:
        if spec is not None and spec.monitor not in logged:
            no_validation = data.validation is None and spec.monitor.startswith("val_")
            hint = " (there is no validation data: set data.validation)" if no_validation else ""
            raise ConfigError(f"{source.where(path)}: {'.'.join(path)}: {spec.monitor!r} is not logged{hint}"
                              f"{closest_match(spec.monitor, logged)}; logged values: {', '.join(logged)}")
    weights = config.train.class_weight
    if isinstance(weights, dict):
        unknown = sorted(set(weights) - set(data.schema.class_labels))
        if task != "classification" or unknown:
            raise ConfigError(f"{source.where(('train', 'class_weight'))}: train.class_weight: "
                              + (f"unknown class {unknown[0]!r}; classes are {', '.join(data.schema.class_labels)}"
                                 if task == "classification" else "only for classification"))
    elif weights == "balanced" and task != "classification":
        raise ConfigError(f"{source.where(('train', 'class_weight'))}: train.class_weight: only for classification")
    return config


def sample_weights(config: Config, schema: DataSchema, targets) -> np.ndarray | None:
    """Per-row training weights from ``train.class_weight`` (balanced: n / (classes * count))."""
    weights = config.train.class_weight
    if weights is None:
        return None
    classes = class_indices(targets)
    if weights == "balanced":
        counts = np.bincount(classes, minlength=len(schema.class_labels)).astype(np.float64)
        per_class = np.divide(len(classes), len(counts) * counts, out=np.zeros_like(counts), where=counts > 0)
    else:
        per_class = np.array([weights.get(label, 1.0) for label in schema.class_labels])
    return per_class[classes].astype(np.float32)


def _comparable(config: Config, base_dir: Path) -> dict:
    """The config as a flat {dotted key: value} with absolute data paths, to compare runs."""
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        else:
            flat[prefix] = value

    walk("", config.to_dict())
    for key in ("data.train", "data.test", "data.validation"):
        if isinstance(flat.get(key), str):
            flat[key] = str(_data_path(base_dir, flat[key]).resolve())
    return flat


_RESUMABLE_CHANGES = ("train.epochs", "train.early_stopping", "train.tolerance", "tune.")  # fit reads no tune:


def _refuse_changed_config(stored: dict, current: dict, run_dir: Path):
    keys = sorted(set(stored) | set(current))
    differing = [key for key in keys if not key.startswith(_RESUMABLE_CHANGES) and stored.get(key) != current.get(key)]
    if differing:
        details = "; ".join(f"{key}: {stored.get(key)!r} -> {current.get(key)!r}" for key in differing)
        raise ConfigError(f"cannot resume {run_dir}: the config differs from the checkpoint in {details}. "
                          "Only train.epochs, train.early_stopping and train.tolerance may change; "
                          "train into a new --out instead")


def _data_files(config: Config, base_dir: Path) -> dict:
    """The files training reads, by config key: the training CSV, and the validation CSV if one is given."""
    files = {"data.train": _data_path(base_dir, config.data.train)}
    if isinstance(config.data.validation, str):
        files["data.validation"] = _data_path(base_dir, config.data.validation)
    return files


def _data_hashes(files: dict) -> dict:
    """SHA-256 of each training input (regular files only), so a resume can tell that the data changed."""
    return {key: datacache.file_sha256(path) for key, path in files.items() if path.is_file()}


def _refuse_changed_data(meta: dict, hashes: dict, files: dict, run_dir: Path):
    for key, digest in (meta.get("data_sha256") or {}).items():
        if hashes.get(key) != digest:
            raise DataError(f"{files.get(key, key)}: {key} changed since the checkpoint in {run_dir} was written; "
                            "resuming on other data would not continue the same training. Train into a new --out "
                            "instead")


def _input_paths(config_path, config: Config, base_dir: Path) -> list[Path]:
    """Every file a fit reads: none of them may live inside the run folder it replaces."""
    paths = [Path(config_path), *_data_files(config, base_dir).values()]
    return paths + ([_data_path(base_dir, config.data.test)] if config.data.test else [])


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
        return {"command": self.command, "started": self.started.isoformat(timespec="seconds"),
                "ended": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(time.monotonic() - self.clock, 3)}


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

    def resume_command(self, overrides=None) -> str:
        return resume_command(self.config_path, self.target.directory,
                              self.overrides if overrides is None else overrides)

    def save(self, model, loss, history, stop_reason, best_epoch, monitor) -> dict:
        """Evaluate the model on every split and commit the run folder, checkpoint included."""
        metrics = _split_metrics(model, loss, self.data)
        stored = _relocate_paths(self.config, self.base_dir, self.target.directory)
        manifest = {
            "config": stored.to_dict(),
            "data": self.data.schema.to_dict(),
            "metrics": metrics,
            "training": {"epochs_done": len(history), "stop_reason": stop_reason, "best_epoch": best_epoch,
                         "monitor": monitor},
            "gelu": "exact",  # run folders without it meant the tanh form by gelu (see _upgrade_config)
            "run": (self.record or RunRecord.start()).to_dict(),
        }
        checkpoint = self.target.checkpoint
        carry = {CHECKPOINT: checkpoint} if checkpoint.exists() else None
        save_run(self.target.directory, model.state(), manifest, dump_config(stored), history, self.target.lock, carry)
        return metrics


class _Checkpointer:
    """Writes the checkpoint after every epoch (atomically), flushing it to disk every few seconds.

    fsync costs tens of milliseconds here, more than an epoch of a small model; renaming
    alone already protects the checkpoint from a crash or Ctrl-C of this process."""

    SYNC_SECONDS = 5.0

    def __init__(self, session: _Session, comparable: dict):
        self.path = session.target.checkpoint
        self.extra = {
            "format_version": CHECKPOINT_FORMAT_VERSION, "config": comparable,
            "config_sha256": hashlib.sha256(json.dumps(comparable, sort_keys=True).encode()).hexdigest(),
            "data_sha256": session.data_sha256,
            "resume": {"config": str(Path(session.config_path).resolve()), "overrides": list(session.overrides),
                       "epochs": session.config.train.epochs},
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
    return build_trainer(session.config, session.data, seeds, callbacks,
                         on_epoch_saved=_Checkpointer(session, comparable))


def build_trainer(config: Config, data: PreparedData, seeds: Seeds, callbacks: Callbacks | None = None, *,
                  on_epoch_saved=None, blas_threads: int | None = None) -> Trainer:
    """The model, loss, optimizer, schedule and loop a checked config describes, ready to run
    (fit's, and each tune trial's in memory)."""
    model = build_model(config, data.schema, seeds)
    loss = make_loss(config.loss, config.model.output.activation)
    optimizer = make_model_optimizer(config.optimizer.name, model, **config.optimizer.engine_options())
    schedule_spec = config.optimizer.schedule
    schedule = make_schedule(schedule_spec.name, config.optimizer.lr, config.train.epochs,
                             **schedule_spec.engine_options())
    if schedule_spec.name == "plateau":
        schedule.higher_is_better = higher_is_better(schedule_spec.monitor)
    stopping = None
    if config.train.early_stopping is not None:
        stopping = EarlyStopping(**config.train.early_stopping.model_dump())
    options = TrainOptions(config.train.epochs, config.train.batch_size, config.train.shuffle,
                           config.train.tolerance, full_batch=config.optimizer.name == "gd",
                           metrics=tuple(config.train.metrics))
    return Trainer(model, loss, optimizer, data.train, data.validation, options, config.task,
                   shuffle_rng=seeds.shuffle, dropout_rng=seeds.dropout, schedule=schedule,
                   early_stopping=stopping, sample_weight=sample_weights(config, data.schema, data.train.targets),
                   n_classes=len(data.schema.class_labels), target_divisor=data.schema.target_divisor,
                   callbacks=callbacks, on_epoch_saved=on_epoch_saved, blas_threads=blas_threads)


def _save_from_checkpoint(session: _Session, trainer: Trainer, stop_reason: str) -> int:
    """After Ctrl-C or divergence: the run's model becomes the last finished epoch's (0: none yet)."""
    if session.target.replacing or not session.target.checkpoint.exists():
        return 0
    meta, arrays = read_checkpoint(session.target.directory)
    model = trainer.model
    model.load_state({key[len("param/"):]: value for key, value in arrays.items() if key.startswith("param/")})
    session.save(model, trainer.loss, history_from_checkpoint(meta, arrays), stop_reason, meta["best"]["epoch"],
                 trainer.monitor)
    return meta["epoch"]


def _interrupted(session: _Session, trainer: Trainer, number: int) -> TrainingInterrupted:
    """Ctrl-C, SIGTERM or SIGHUP while training: keep what is finished, say how to go on."""
    directory = session.target.directory
    if session.target.replacing:
        return TrainingInterrupted(f"interrupted: {directory} still holds the previous run, unchanged; the new "
                                   "training was discarded", number)
    try:
        epoch = _save_from_checkpoint(session, trainer, "interrupted")
    except KeyboardInterrupt:
        return TrainingInterrupted(f"interrupted again while saving; {directory} holds the training checkpoint; "
                                   f"resume with: {session.resume_command()}", number)
    if not epoch:
        return TrainingInterrupted("interrupted before the first epoch finished; nothing was saved", number)
    return TrainingInterrupted(f"interrupted: {directory} holds the model after epoch {epoch}; resume with: "
                               f"{session.resume_command()}", number)


def _diverged(session: _Session, trainer: Trainer, error: TrainingDiverged):
    directory = session.target.directory
    if session.target.replacing:
        error.args = (f"{error.args[0]}. {directory} still holds the previous run, unchanged",)
        return
    epoch = _save_from_checkpoint(session, trainer, "diverged")
    where = f"{directory} holds the model after epoch {epoch}, the last good one" if epoch else "nothing was saved"
    error.args = (f"{error.args[0]}. {where}",)


def _not_saved(session: _Session, what: str) -> str:
    """Where things stand when the final save did not happen."""
    if session.target.replacing:
        return f"{what}: {session.target.directory} still holds the previous run, unchanged"
    return (f"{what}: training finished but the model was not saved; {session.target.directory} holds its "
            f"checkpoint. Save the model with: {session.resume_command()}")


def _already_finished(session: _Session, trainer: Trainer, reason: str) -> ConfigError:
    """Resuming a run that stopped on its own: refused, with the change that would train on."""
    epoch, config = trainer.epoch, session.config
    if reason.startswith("early stop"):
        patience = config.train.early_stopping.patience
        key, value = "train.early_stopping.patience", patience + max(10, patience)
    elif reason.startswith("converged"):
        key, value = "train.tolerance", "null"
    else:
        key, value = "train.epochs", epoch * 2
    overrides = [item for item in session.overrides if not item.startswith(f"{key}=")] + [f"{key}={value}"]
    if key != "train.epochs" and epoch >= config.train.epochs:
        overrides = [item for item in overrides if not item.startswith("train.epochs=")] + [
            f"train.epochs={epoch * 2}"]
    how = f"all {epoch} epochs done" if reason == "epochs done" else f"{reason.split(':')[0]} at epoch {epoch}"
    return ConfigError(f"{session.target.directory}: already finished ({how}); "
                       "the model is untouched. To train on anyway: " + session.resume_command(overrides))


def _committed(directory: Path, trainer: Trainer) -> bool:
    """Whether the folder's saved model is the one the checkpoint's training ended with."""
    try:
        return read_manifest(directory)["training"]["epochs_done"] == trainer.epoch
    except (ArtifactError, KeyError, TypeError):
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
            raise type(error)(f"{error}. Training stopped; "
                              + ("the previous run is unchanged" if session.target.replacing else
                                 "continue later from the last saved epoch with: "
                                 f"{session.resume_command()}")) from None
    try:
        metrics = session.save(trainer.model, trainer.loss, result.history, result.stop_reason,
                               result.best_epoch, result.monitor)
    except KeyboardInterrupt as interrupt:
        if session.target.lock.commits:  # the signal came while the commit finished
            raise TrainingInterrupted(f"interrupted after saving: {session.target.directory} holds the finished run",
                                      signal_of(interrupt)) from None
        raise TrainingInterrupted(_not_saved(session, "interrupted while saving"), signal_of(interrupt)) from None
    except DltrainError as error:
        raise type(error)(_not_saved(session, str(error))) from None
    return FitResult(session.target.directory, session.config, result.history, result.stop_reason, metrics,
                     result.best_epoch, result.monitor, resumed_from)


def _restore(trainer: Trainer, checkpoint, run_dir: Path):
    """Load a checkpoint into the trainer; arrays that do not fit this model are an ArtifactError."""
    meta, arrays = checkpoint
    expected = {f"param/{key}" for key in trainer.model.params}
    expected |= {f"optimizer/{key}" for key in trainer.optimizer.state()["arrays"]}
    given = {key for key in arrays if not key.startswith("best/")} - {"history"}
    best = {key[len("best/"):] for key in arrays if key.startswith("best/")}
    problem = None
    if given != expected:
        problem = (f"arrays missing {sorted(expected - given)[:3]}, unexpected {sorted(given - expected)[:3]}")
    elif best and (best != set(trainer.model.params) or any(
            arrays[f"best/{key}"].shape != value.shape for key, value in trainer.model.params.items())):
        problem = "the best epoch's parameters do not match the model"
    if problem is None:
        try:
            trainer.load_state(meta, arrays)
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as error:
            problem = str(error) or type(error).__name__
    if problem is not None:
        raise ArtifactError(f"{Path(run_dir) / CHECKPOINT}: the checkpoint does not fit this model ({problem}); "
                            "train again without --resume")


def fit(config_path, overrides=(), out=None, force=False, callbacks: Callbacks | None = None,
        on_run_dir=None, resume=False, command_line=None) -> FitResult:
    """Train from a config file and commit the run folder; returns where and how it went.

    With ``resume``, continue the checkpoint in ``out`` up to ``train.epochs``, bit for bit
    as if training had never stopped. ``command_line`` is recorded in model.json."""
    record = RunRecord.start(command_line)
    overrides = list(overrides)
    config, base_dir, source = load_config(config_path, overrides)
    if resume and out is None:
        raise ConfigError("--resume needs --out DIR: the run folder to continue")
    inputs = _input_paths(config_path, config, base_dir)
    target = claim_run_dir(config.name, out, force, resume, inputs) if out is not None else None
    try:
        files = _data_files(config, base_dir)
        hashes = _data_hashes(files)
        checkpoint = read_checkpoint(target.directory) if resume else None
        if checkpoint:
            _refuse_changed_data(checkpoint[0], hashes, files, target.directory)
        seeds = Seeds.from_seed(config.seed)
        data = prepare_data(config, source, base_dir, seeds)
        config = check_training_options(data.config, source, data)
        check_model_memory(config, data.schema, source.where, len(data.train))  # before a run folder is made
        comparable = _comparable(config, base_dir)
        if checkpoint:
            _refuse_changed_config(checkpoint[0]["config"], comparable, target.directory)
        if target is None:
            target = claim_run_dir(config.name, inputs=inputs)
        if on_run_dir:
            on_run_dir(target.directory)
        session = _Session(Path(config_path), overrides, config, base_dir, data, target, hashes, record)
        trainer = _make_trainer(session, seeds, comparable, callbacks)
        if checkpoint:
            _restore(trainer, checkpoint, target.directory)
        return _train_and_save(session, trainer, resume)
    finally:
        if target is not None:
            target.release()



@dataclass
class LoadedRun:
    run_dir: Path
    config: Config
    schema: DataSchema
    model: Sequential
    manifest: dict

    @property
    def loss(self):
        return make_loss(self.config.loss, self.config.model.output.activation)


def _upgrade_config(manifest: dict):
    """A stored config in the words of this version, so older run folders predict as before."""
    config = manifest["config"]
    if manifest.get("gelu") != "exact" and isinstance(config, dict):
        layers = config.get("model", {}).get("layers", []) if isinstance(config.get("model"), dict) else []
        for layer in layers if isinstance(layers, list) else []:
            if isinstance(layer, dict) and layer.get("activation") == "gelu":
                layer["activation"] = "gelu_tanh"
    data = manifest.get("data")
    if isinstance(data, dict) and "target_scaler" not in data and isinstance(config, dict) \
            and isinstance(config.get("data"), dict):
        config["data"].setdefault("target_scale", "none")  # saved before targets were scaled
    return config


def load_run(run_dir) -> LoadedRun:
    """Rebuild a trained model from its run folder alone, checking the weights' checksum."""
    run_dir = Path(run_dir)
    manifest, arrays = read_run(run_dir)
    try:
        config = Config.model_validate(_upgrade_config(manifest))
        schema = DataSchema.from_dict(manifest["data"])
    except ValidationError as error:
        first = error.errors()[0]
        raise ArtifactError(f"{run_dir / 'model.json'}: the stored config is invalid at "
                            f"{'.'.join(map(str, first['loc']))} ({first['msg']}); train again") from None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
        raise ArtifactError(f"{run_dir / 'model.json'}: the stored data schema is invalid "
                            f"({error!r}); train again") from None
    if schema.task == "classification" and (len(schema.class_labels) < 2
                                            or (schema.binary and len(schema.class_labels) != 2)):
        raise ArtifactError(f"{run_dir / 'model.json'}: the stored class labels {schema.class_labels} do not fit "
                            "the model; the file was changed, train again")
    try:
        model = build_model(config, schema, where=lambda path: f"{run_dir / 'model.json'}")
    except ConfigError as error:
        raise ArtifactError(str(error)) from None
    try:
        model.load_state(arrays)
    except (KeyError, ValueError) as error:
        raise ArtifactError(f"{run_dir / 'model.npz'}: does not fit the stored model ({error}); "
                            "train again") from None
    return LoadedRun(run_dir, config, schema, model, manifest)


def _check_argument_order(command: str, run_dir, data_path):
    """``dltrain predict data.csv runs/x``: the two arguments are swapped; say so."""
    run_dir, data_path = Path(run_dir), Path(data_path)
    if run_dir.is_file():
        if data_path.is_dir():
            raise ArtifactError(f"the arguments are swapped: {run_dir} is a file and {data_path} a folder; "
                                f"write: dltrain {command} {data_path} {run_dir}")
        raise ArtifactError(f"{run_dir}: is a file, not a run folder; the run folder comes first: "
                            f"dltrain {command} RUN_DIR DATA.csv")


def csv_dialect(delimiter: str | None = None, encoding: str | None = None) -> dict:
    """The ``--delimiter``/``--encoding`` of eval and predict, checked (None: detect, and UTF-8)."""
    if delimiter is not None:
        delimiter = DELIMITER_ALIASES.get(delimiter, delimiter)
        if delimiter not in DELIMITERS:
            raise ConfigError(f"--delimiter {delimiter!r}: use one of , ; tab |, or leave it out to detect it")
    return {"delimiter": delimiter, "encoding": encoding}


def evaluate_run(run_dir, data_path, dialect: dict | None = None) -> tuple[dict, list[str]]:
    """Loss and every metric of a saved run on a labelled CSV, with the class labels in index order.

    ``dialect``: the CSV's delimiter and encoding (see ``csv_dialect``); detected by default."""
    _check_argument_order("eval", run_dir, data_path)
    run = load_run(run_dir)
    features, targets = read_features(data_path, run.schema, with_target=True, dialect=dialect or csv_dialect())
    return (evaluate(run.model, run.loss, features, targets, run.schema.task, detailed=True,
                     target_divisor=run.schema.target_divisor), run.schema.class_labels)


def format_number(value) -> str:
    """The shortest text that reads back as the same float32, the model's precision: 0.5,
    151.25, 2.55662e-11. One format for predicted values and probabilities alike."""
    single = np.float32(value)
    if single == 0 or 1e-4 <= abs(single) < 1e16 or not np.isfinite(single):
        return np.format_float_positional(single, unique=True, trim="-")
    return np.format_float_scientific(single, unique=True, trim="-")


def _kept_columns(data_path, schema: DataSchema, keep, dialect: dict) -> list[np.ndarray]:
    """The ``--keep`` columns of the CSV, as written, to pass through beside the predictions."""
    if not keep:
        return []
    table = schema.open(data_path, dialect)
    for name in keep:
        table.index(name, "--keep")
    columns = table.read(text=list(keep))
    return [columns.text[name] for name in keep]


def predict_rows(run_dir, data_path, keep=(), dialect: dict | None = None) -> tuple[list[str], list[list]]:
    """Header and rows of predictions: the ``keep`` columns as given, then the target's predicted
    label or value, then prob_<label> per class. ``dialect``: see ``csv_dialect`` (default: detected)."""
    dialect = dialect or csv_dialect()
    _check_argument_order("predict", run_dir, data_path)
    run = load_run(run_dir)
    schema = run.schema
    keep = list(dict.fromkeys(keep))
    kept = _kept_columns(data_path, schema, keep, dialect)
    features, _ = read_features(data_path, schema, with_target=False, dialect=dialect)
    outputs = run.model.predict(features)
    if schema.task == "regression":  # one column per target
        values = schema.unscale_targets(outputs.astype(np.float64))
        header, rows = list(schema.targets), [[format_number(value) for value in row] for row in values.tolist()]
    else:
        probabilities = np.column_stack([1.0 - outputs[:, 0], outputs[:, 0]]) if schema.binary else outputs
        labels = np.asarray(schema.class_labels, dtype=object)[predicted_classes(outputs)]
        header = [schema.target] + [f"prob_{label}" for label in schema.class_labels]
        rows = [[label] + [format_number(p) for p in row] for label, row in zip(labels, probabilities.tolist())]
    clashes = [name for name in keep if name in header]
    if clashes:
        raise ConfigError(f"--keep {clashes[0]}: the predictions have a column of that name already; "
                          f"keep other columns, or rename {clashes[0]!r} in a copy of the CSV")
    if kept:
        header = keep + header
        rows = [[column[index] for column in kept] + row for index, row in enumerate(rows)]
    return header, rows


def predictions_csv(header, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def refuse_overwriting_inputs(out, inputs, run_dir):
    """An output file must not be one of the command's inputs, nor a file inside a run folder."""
    out = Path(out)
    for path in inputs:
        if out.exists() and Path(path).exists() and os.path.samefile(out, path):
            raise ArtifactError(f"--out {out} is the input {path}; writing there would replace the data. "
                                "Give another file name")
    parent = out.parent.resolve()
    if parent == Path(run_dir).resolve() or holds_run(parent):
        raise ArtifactError(f"--out {out} is inside a run folder ({out.parent}); writing there could break the run. "
                            "Write the predictions elsewhere")
