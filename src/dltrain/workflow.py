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
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from .artifacts import (CHECKPOINT, CHECKPOINT_FORMAT_VERSION, RUN_FILES, choose_run_dir, read_checkpoint,
                        read_manifest, read_weights, save_checkpoint, save_run)
from .config import Config, ConfigSource, closest_match, dump_config, load_config
from . import datacache
from .csvio import CsvFile
from .data import (ColumnOptions, DataPlan, DataSchema, Split, checked_rows, column_encodings, infer_task,
                   plan_data, read_features, stratified_split, target_labels)
from .errors import ArtifactError, ConfigError, DataError, DltrainError, TrainingDiverged
from .losses import make_loss
from .metrics import (CLASSIFICATION_METRICS, DEFAULT_METRICS, REGRESSION_METRICS, class_indices, evaluate,
                      higher_is_better, predicted_classes)
from .model import Sequential
from .optimizers import make_model_optimizer
from .schedules import make_schedule
from .train import Callbacks, EarlyStopping, Trainer, TrainOptions, history_from_checkpoint

_OUTPUT_FOR_LOSS = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid", "mse": "linear"}


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

    loss = config.loss
    if loss == "auto":
        loss = "mse" if task == "regression" else "binary_cross_entropy" if n_classes == 2 else "cross_entropy"
    if task == "regression" and loss != "mse":
        raise fail(("loss",), f"{loss} needs a classification target; use mse for regression")
    if task == "classification" and loss == "mse":
        raise fail(("loss",), "mse is for regression; use cross_entropy or binary_cross_entropy for classes")
    if loss == "binary_cross_entropy" and n_classes != 2:
        raise fail(("loss",), f"binary_cross_entropy needs exactly 2 classes, the target has {n_classes}; "
                   "use cross_entropy")
    activation = config.model.output.activation
    if activation == "auto":
        activation = _OUTPUT_FOR_LOSS[loss]
    required = _OUTPUT_FOR_LOSS[loss] if loss != "mse" else None
    if required and activation != required:
        raise fail(("model", "output", "activation"), f"{loss} needs a {required} output (got {activation!r})")
    if loss == "mse" and activation == "softmax":
        raise fail(("model", "output", "activation"), "softmax is for classes; use linear for regression")
    output = config.model.output.model_copy(update={"activation": activation})
    model = config.model.model_copy(update={"output": output})
    return config.model_copy(update={"task": task, "loss": loss, "model": model})


def _data_path(base_dir: Path, value: str) -> Path:
    """A data path from the config, relative to the config's folder (kept short for messages)."""
    path = Path(value)
    return path if path.is_absolute() else Path(os.path.normpath(base_dir / path))


def _data_plan(spec, table: CsvFile, source: ConfigSource) -> DataPlan:
    options = {name: ColumnOptions(column.type, column.missing, column.fill, column.unknown)
               for name, column in spec.columns.items()}
    return plan_data(table, spec.target, spec.features, spec.exclude, options, spec.missing, spec.fill,
                     source.where)


def prepare_data(config: Config, source: ConfigSource, base_dir: Path, seeds: Seeds) -> PreparedData:
    """Read the CSVs, type the columns, resolve ``auto`` settings, split, fit preprocessing on train only."""
    spec = config.data
    table = CsvFile.open(_data_path(base_dir, spec.train), spec.delimiter, spec.encoding, spec.decimal)
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
        train_positions, validation_positions = stratified_split(labels, len(rows), spec.validation, seeds.split)
        train_rows, validation_rows = rows[train_positions], rows[validation_positions]
        if labels is not None and len(np.unique(labels[train_positions])) < 2:
            raise DataError(f"{table.path}: the training split has only one class; lower data.validation")
    csv_options = {"delimiter": spec.delimiter, "decimal": spec.decimal, "encoding": spec.encoding}
    schema = DataSchema.fit(columns, encodings, train_rows, rows, plan.targets, task, spec.scale,
                            target_missing, csv_options)
    schema.binary = config.loss == "binary_cross_entropy"
    validation = None
    if isinstance(spec.validation, str):
        validation = Split(*read_features(_data_path(base_dir, spec.validation), schema, with_target=True))
    elif validation_rows is not None and len(validation_rows):
        validation = Split(schema.encode_features(columns, validation_rows),
                           schema.encode_target(columns, validation_rows))
    # Last, as it may reuse the parsed matrix in place instead of copying the training rows.
    train_targets = schema.encode_target(columns, train_rows)
    train = Split(schema.encode_features(columns, train_rows, in_place=True), train_targets)
    test = None
    if spec.test is not None:
        test = Split(*read_features(_data_path(base_dir, spec.test), schema, with_target=True))
    return PreparedData(config, schema, train, validation, test)


def build_model(config: Config, schema: DataSchema, seeds: Seeds | None = None) -> Sequential:
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
    return CheckResult(config, build_model(config, data.schema, seeds), data)


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


class TrainingInterrupted(DltrainError):
    """Ctrl-C during fit: the last finished epoch is saved; exit code 130 as for SIGINT."""

    exit_code = 130


def _split_metrics(model, loss, data: PreparedData) -> dict:
    task = data.config.task
    metrics = {"train": evaluate(model, loss, data.train.features, data.train.targets, task)}
    if data.validation is not None:
        metrics["validation"] = evaluate(model, loss, data.validation.features, data.validation.targets, task)
    if data.test is not None:
        metrics["test"] = evaluate(model, loss, data.test.features, data.test.targets, task)
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


_RESUMABLE_CHANGES = ("train.epochs", "train.early_stopping")


def _refuse_changed_config(stored: dict, current: dict, run_dir: Path):
    keys = sorted(set(stored) | set(current))
    differing = [key for key in keys if not key.startswith(_RESUMABLE_CHANGES) and stored.get(key) != current.get(key)]
    if differing:
        details = "; ".join(f"{key}: {stored.get(key)!r} -> {current.get(key)!r}" for key in differing)
        raise ConfigError(f"cannot resume {run_dir}: the config differs from the checkpoint in {details}. "
                          "Only train.epochs and train.early_stopping may change; train into a new --out instead")


class _Checkpointer:
    """Writes the checkpoint after every epoch (atomically), flushing it to disk every few seconds.

    fsync costs tens of milliseconds here, more than an epoch of a small model; renaming
    alone already protects the checkpoint from a crash or Ctrl-C of this process."""

    SYNC_SECONDS = 5.0

    def __init__(self, run_dir: Path, comparable: dict):
        self.run_dir, self.comparable = run_dir, comparable
        self.config_sha256 = hashlib.sha256(json.dumps(comparable, sort_keys=True).encode()).hexdigest()
        self.last_sync = -math.inf

    def __call__(self, trainer: Trainer):
        meta, arrays = trainer.state()
        meta.update({"format_version": CHECKPOINT_FORMAT_VERSION, "config": self.comparable,
                     "config_sha256": self.config_sha256})
        durable = time.monotonic() - self.last_sync >= self.SYNC_SECONDS or trainer.stop_reason != "running"
        save_checkpoint(self.run_dir, meta, arrays, durable)
        if durable:
            self.last_sync = time.monotonic()


def _save_model(run_dir, model, loss, data: PreparedData, config: Config, base_dir: Path, history, stop_reason,
                best_epoch, monitor):
    metrics = _split_metrics(model, loss, data)
    stored = _relocate_paths(config, base_dir, run_dir)
    manifest = {
        "config": stored.to_dict(),
        "data": data.schema.to_dict(),
        "metrics": metrics,
        "training": {"epochs_done": len(history), "stop_reason": stop_reason, "best_epoch": best_epoch,
                     "monitor": monitor},
    }
    save_run(run_dir, model.state(), manifest, dump_config(stored), history)
    return metrics


def _save_from_checkpoint(run_dir, trainer: Trainer, data, config, base_dir, stop_reason):
    """After Ctrl-C or divergence: the run's model becomes the last finished epoch's."""
    try:
        meta, arrays = read_checkpoint(run_dir)
    except ArtifactError:
        return 0
    model = trainer.model
    model.load_state({key[len("param/"):]: value for key, value in arrays.items() if key.startswith("param/")})
    _save_model(run_dir, model, trainer.loss, data, config, base_dir, history_from_checkpoint(meta, arrays),
                stop_reason, meta["best"]["epoch"], trainer.monitor)
    return meta["epoch"]


def fit(config_path, overrides=(), out=None, force=False, callbacks: Callbacks | None = None,
        on_run_dir=None, resume=False) -> FitResult:
    """Train from a config file and save the run folder; returns where and how it went.

    With ``resume``, continue the checkpoint in ``out`` up to ``train.epochs``, bit for bit
    as if training had never stopped."""
    config, base_dir, source = load_config(config_path, overrides)
    seeds = Seeds.from_seed(config.seed)
    data = prepare_data(config, source, base_dir, seeds)
    config = check_training_options(data.config, source, data)
    comparable = _comparable(config, base_dir)
    if resume:
        if out is None:
            raise ConfigError("--resume needs --out DIR: the run folder to continue")
        run_dir = Path(out)
        checkpoint = read_checkpoint(run_dir)
        _refuse_changed_config(checkpoint[0]["config"], comparable, run_dir)
        if checkpoint[0]["epoch"] >= config.train.epochs:
            raise ConfigError(f"{run_dir}: already trained {checkpoint[0]['epoch']} epochs; to continue, raise "
                              f"train.epochs (e.g. --set train.epochs={checkpoint[0]['epoch'] * 2})")
    else:
        run_dir = choose_run_dir(config.name, out, force)
        if force:
            for name in RUN_FILES + (CHECKPOINT,):
                (run_dir / name).unlink(missing_ok=True)
    if on_run_dir:
        on_run_dir(run_dir)
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
    trainer = Trainer(model, loss, optimizer, data.train, data.validation, options, config.task,
                      shuffle_rng=seeds.shuffle, dropout_rng=seeds.dropout, schedule=schedule,
                      early_stopping=stopping, sample_weight=sample_weights(config, data.schema, data.train.targets),
                      n_classes=len(data.schema.class_labels), callbacks=callbacks,
                      on_epoch_saved=_Checkpointer(run_dir, comparable))
    if resume:
        trainer.load_state(*checkpoint)
    resumed_from = trainer.epoch
    try:
        result = trainer.run()
    except KeyboardInterrupt:
        epoch = _save_from_checkpoint(run_dir, trainer, data, config, base_dir, "interrupted")
        if not epoch:
            raise TrainingInterrupted("interrupted before the first epoch finished; nothing was saved") from None
        raise TrainingInterrupted(
            f"interrupted: {run_dir} holds the model after epoch {epoch}; resume with: "
            f"dltrain fit {config_path} --out {run_dir} --resume") from None
    except TrainingDiverged as error:
        epoch = _save_from_checkpoint(run_dir, trainer, data, config, base_dir, "diverged")
        if epoch:
            error.args = (f"{error.args[0]}. {run_dir} holds the model after epoch {epoch}, the last good one",)
        raise
    metrics = _save_model(run_dir, model, loss, data, config, base_dir, result.history, result.stop_reason,
                          result.best_epoch, result.monitor)
    return FitResult(run_dir, config, result.history, result.stop_reason, metrics, result.best_epoch,
                     result.monitor, resumed_from)


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


def load_run(run_dir) -> LoadedRun:
    """Rebuild a trained model from its run folder alone, checking the weights' checksum."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    try:
        config = Config.model_validate(manifest["config"])
        schema = DataSchema.from_dict(manifest["data"])
    except ValidationError as error:
        first = error.errors()[0]
        raise ArtifactError(f"{run_dir / 'model.json'}: the stored config is invalid at "
                            f"{'.'.join(map(str, first['loc']))} ({first['msg']}); train again") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ArtifactError(f"{run_dir / 'model.json'}: the stored data schema is invalid "
                            f"({error!r}); train again") from None
    if schema.task == "classification" and (len(schema.class_labels) < 2
                                            or (schema.binary and len(schema.class_labels) != 2)):
        raise ArtifactError(f"{run_dir / 'model.json'}: the stored class labels {schema.class_labels} do not fit "
                            "the model; the file was changed, train again")
    arrays = read_weights(run_dir, manifest["model_sha256"])
    model = build_model(config, schema)
    try:
        model.load_state(arrays)
    except (KeyError, ValueError) as error:
        raise ArtifactError(f"{run_dir / 'model.npz'}: does not fit the stored model ({error}); "
                            "train again") from None
    return LoadedRun(run_dir, config, schema, model, manifest)


def evaluate_run(run_dir, data_path) -> tuple[dict, list[str]]:
    """Loss and every metric of a saved run on a labelled CSV, with the class labels in index order."""
    run = load_run(run_dir)
    features, targets = read_features(data_path, run.schema, with_target=True)
    return evaluate(run.model, run.loss, features, targets, run.schema.task, detailed=True), run.schema.class_labels


def predict_rows(run_dir, data_path) -> tuple[list[str], list[list]]:
    """Header and rows of predictions: the target's predicted label or value, then prob_<label>."""
    run = load_run(run_dir)
    features, _ = read_features(data_path, run.schema, with_target=False)
    outputs = run.model.predict(features)
    schema = run.schema
    if schema.task == "regression":  # one column per target
        return schema.targets, [[repr(float(value)) for value in row] for row in outputs.tolist()]
    probabilities = np.column_stack([1.0 - outputs[:, 0], outputs[:, 0]]) if schema.binary else outputs
    labels = np.asarray(schema.class_labels, dtype=object)[predicted_classes(outputs)]
    header = [schema.target] + [f"prob_{label}" for label in schema.class_labels]
    rows = [[label] + [f"{p:.6g}" for p in row] for label, row in zip(labels, probabilities.tolist())]
    return header, rows


def predictions_csv(header, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
