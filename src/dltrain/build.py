"""From a validated config and its prepared data to a model and a training loop, ready to run.

``prepare_fit`` checks a config against its data as fit and check need it: the CSVs prepared
(``data.prepare``, which fills in the task, loss and output activation), the training options
checked (``check_training_options``: metrics, monitors, class weights), and the model's memory
estimated before anything is allocated (``check_model_memory``). ``build_model`` and
``build_trainer`` then make the network and its loop; ``array_trainer`` does all of it for
arrays already in memory (the benchmarks, the engine's tests). Nothing here prints."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config, ConfigSource, build_config, closest_match
from .data import DataSchema, Split
from .data.prepare import PreparedData, prepare_data, resolve_auto
from .data.schema import Scaler
from .data.split import StoredSplit
from .engine import cuda
from .engine.backend import CPU, Backend
from .engine.losses import make_loss
from .engine.model import Sequential
from .engine.optimizers import make_model_optimizer
from .engine.schedules import make_schedule
from .errors import ConfigError
from .files import human_bytes
from .metrics import (
    CLASSIFICATION_METRICS,
    DEFAULT_METRICS,
    REGRESSION_METRICS,
    class_indices,
    higher_is_better,
    logged_names,
)
from .system import available_memory
from .train import Callbacks, Trainer, TrainingData, TrainOptions, TrainSettings


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


def prepare_fit(
    config: Config, source: ConfigSource, base_dir: Path, checking: bool = False
) -> tuple[Config, Seeds, PreparedData]:
    """Config and data checked together, as fit and check both need them: the CSVs read and split,
    every ``auto`` resolved, the training options checked, and the model's memory estimated.
    ``checking``: for `dltrain check`, which trains nothing (see data.prepare.prepare_data)."""
    seeds = Seeds.from_seed(config.seed)
    data = prepare_data(config, source, base_dir, seeds.split, checking=checking)
    config = check_training_options(data.config, source, data)
    check_model_memory(config, data.schema, source, len(data.train))  # before a run folder is made
    return config, seeds, data


def resolve_config(config: Config, source: ConfigSource, data: PreparedData) -> Config:
    """Another config's ``auto`` settings filled in from data already prepared (a tune trial's),
    and its training options checked against that data."""
    resolved = resolve_auto(config, source, data.schema.task, len(data.schema.class_labels))
    return check_training_options(resolved, source, data)


def _checked_metrics(config: Config, source: ConfigSource, n_classes: int) -> list:
    """``train.metrics`` (default: the task's), each one the task logs."""
    task = config.task
    choices = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    metrics = config.train.metrics if config.train.metrics is not None else DEFAULT_METRICS[task]
    for index, name in enumerate(metrics):
        if name not in choices:
            raise source.fail(
                ("train", "metrics", index), f"{name} is not a {task} metric; choose from {', '.join(choices)}"
            )
        if name == "roc_auc" and n_classes != 2:
            raise source.fail(("train", "metrics", index), f"roc_auc needs two classes, the target has {n_classes}")
    return list(metrics)


def _check_monitors(config: Config, source: ConfigSource, has_validation: bool) -> None:
    """Early stopping and the plateau schedule watch a value that is logged."""
    logged = logged_names(config.train.metrics, has_validation)
    monitors: list[tuple[tuple, Any]] = [(("train", "early_stopping", "monitor"), config.train.early_stopping)]
    if config.optimizer.schedule.name == "plateau":
        monitors.append((("optimizer", "schedule", "monitor"), config.optimizer.schedule))
    for path, spec in monitors:
        if spec is not None and spec.monitor not in logged:
            no_validation = not has_validation and spec.monitor.startswith("val_")
            hint = " (there is no validation data: set data.validation)" if no_validation else ""
            raise source.fail(
                path,
                f"{spec.monitor!r} is not logged{hint}"
                f"{closest_match(spec.monitor, logged)}; logged values: {', '.join(logged)}",
            )


def _check_class_weights(config: Config, source: ConfigSource, class_labels: list) -> None:
    weights, task = config.train.class_weight, config.task
    if isinstance(weights, dict):
        unknown = sorted(set(weights) - set(class_labels))
        if task != "classification":
            raise source.fail(("train", "class_weight"), "only for classification")
        if unknown:
            raise source.fail(
                ("train", "class_weight"), f"unknown class {unknown[0]!r}; classes are {', '.join(class_labels)}"
            )
    elif weights == "balanced" and task != "classification":
        raise source.fail(("train", "class_weight"), "only for classification")


def check_training_options(config: Config, source: ConfigSource, data: PreparedData) -> Config:
    """Fill in the logged metrics and check monitors and class weights against the data."""
    metrics = _checked_metrics(config, source, len(data.schema.class_labels))
    config = config.model_copy(update={"train": config.train.model_copy(update={"metrics": metrics})})
    _check_monitors(config, source, data.validation is not None)
    _check_class_weights(config, source, data.schema.class_labels)
    return config


# Bytes per parameter while training: the float32 weight, its gradient, two optimizer moments,
# and the float64 draw the initializer makes before it is copied in.
BYTES_PER_PARAMETER = 4 * 4 + 8
TRAIN_BYTES_PER_UNIT = 4 * 4  # per row of a batch: a layer's output, activation, and their gradients
PREDICT_BYTES_PER_UNIT = 4 * 2  # per row of a prediction batch: output and activation
PREDICT_ROWS = 4096  # Sequential.logits' batch


def _model_sizes(config: Config, schema: DataSchema, train_rows: int | None) -> list:
    """Each layer's (index, kind, fan in, fan out, parameters, bytes with a batch of activations)."""
    hidden = [layer.model_dump() for layer in config.model.layers]
    batch = 0
    if train_rows is not None:  # a batch never holds more rows than the training split
        batch = train_rows if config.optimizer.name == "gd" else min(config.train.batch_size, train_rows)
    per_unit = batch * TRAIN_BYTES_PER_UNIT + PREDICT_ROWS * PREDICT_BYTES_PER_UNIT
    sizes = []
    for index, kind, fan_in, fan_out, shapes in Sequential.param_shapes(schema.n_inputs, hidden, schema.n_outputs):
        count = sum(math.prod(shape) for shape in shapes.values())
        sizes.append((index, kind, fan_in, fan_out, count, count * BYTES_PER_PARAMETER + fan_out * per_unit))
    return sizes


def model_memory(config: Config, schema: DataSchema, train_rows: int | None = None) -> int:
    """The bytes a model takes in training: parameters, gradients, optimizer state and a batch's activations."""
    return sum(size for *_, size in _model_sizes(config, schema, train_rows))


def check_model_memory(config: Config, schema: DataSchema, source: ConfigSource, train_rows: int | None = None) -> None:
    """Refuse a model whose parameters (and one batch of activations) exceed the available memory.

    Estimated from each layer's parameter shapes before anything is allocated, so
    ``units: 1000000000000`` is a message naming the layer instead of a MemoryError.
    ``train_rows``: the training split's size, for the activations of a training batch (None:
    the model only predicts)."""
    sizes = _model_sizes(config, schema, train_rows)
    needed = sum(size for *_, size in sizes)
    available = available_memory()
    if needed <= available:
        return
    index, kind, fan_in, fan_out, count, size = max(sizes, key=lambda item: item[-1])
    path: tuple
    if index is None:
        path, layer = ("model", "output"), f"the output layer ({fan_in} inputs x {fan_out} outputs)"
    else:
        path, layer = ("model", "layers", index, "units"), f"{kind} layer {index} ({fan_in} inputs x {fan_out} units)"
    raise source.fail(
        path,
        f"{layer} needs {human_bytes(size)} "
        f"({count:,} parameters with their gradients and optimizer state, and a "
        "batch of activations); the "
        f"whole model needs {human_bytes(needed)}, more than the {human_bytes(available)} of memory "
        "available; use fewer units",
    )


def build_model(
    config: Config,
    schema: DataSchema,
    seeds: Seeds | None = None,
    source: ConfigSource | None = None,
    train_rows: int | None = None,
    backend: Backend = CPU,
) -> Sequential:
    """The network a config describes, for a fitted schema, on ``backend`` (its weights drawn on
    the host: the same start on every device); refused when it cannot fit in memory."""
    check_model_memory(config, schema, source or ConfigSource("config", {}, {}), train_rows)
    seeds = seeds or Seeds.from_seed(config.seed)
    hidden = [layer.model_dump() for layer in config.model.layers]
    return Sequential.build(
        schema.n_inputs,
        hidden,
        schema.n_outputs,
        config.model.output.activation,
        init_rng=seeds.init,
        dropout_rng=seeds.dropout,
        output_init=config.model.output.init,
        backend=backend,
    )


@dataclass
class DeviceChoice:
    """Where a model trains (``train.device``, or --device), and why: printed by fit and
    stored in model.json."""

    name: str  # cpu or cuda
    setting: str  # auto, cpu or cuda
    reason: str
    backend: Backend

    def to_dict(self) -> dict:
        return {"name": self.name, "setting": self.setting, "reason": self.reason}


def step_macs(config: Config, schema: DataSchema, train_rows: int) -> int:
    """Multiply-adds of a training step's forward products: batch size x the sum of fan_in x
    fan_out over the dense layers (what ``train.device: auto`` weighs)."""
    hidden = [layer.model_dump() for layer in config.model.layers]
    batch = train_rows if config.optimizer.name == "gd" else min(config.train.batch_size, max(1, train_rows))
    shapes = Sequential.param_shapes(schema.n_inputs, hidden, schema.n_outputs)
    return batch * sum(fan_in * fan_out for _, kind, fan_in, fan_out, _ in shapes if kind == "dense")


def choose_device(
    config: Config,
    schema: DataSchema,
    train_rows: int,
    source: ConfigSource | None = None,
    flag: bool = False,
) -> DeviceChoice:
    """The device ``train.device`` asks for (``flag``: given as --device), by engine.cuda.choose;
    ``cuda`` where CuPy or a GPU is missing is a ConfigError naming the setting and what to do."""
    setting = config.train.device
    try:
        gpu, reason = cuda.choose(setting, step_macs(config, schema, train_rows))
    except cuda.DeviceUnavailable as error:
        what = f"{error}; use cpu, or auto (the GPU only where one is found and it pays)"
        if flag or source is None:
            raise ConfigError(f"--device {setting}: {what}".replace("use cpu", "use --device cpu")) from None
        raise source.fail(("train", "device"), f"{setting}: {what}") from None
    if gpu is None:
        return DeviceChoice("cpu", setting, reason, CPU)
    return DeviceChoice("cuda", setting, reason, gpu)


def class_weights(config: Config, schema: DataSchema, train) -> np.ndarray | None:
    """The weight of each class in the training loss, from ``train.class_weight`` (balanced:
    n / (classes * count) over the training split ``train``); None without class weights."""
    weights = config.train.class_weight
    if weights is None:
        return None
    if weights == "balanced":
        counts = np.zeros(len(schema.class_labels), dtype=np.float64)
        for targets in train.target_chunks():
            counts += np.bincount(class_indices(targets), minlength=len(counts))
        return np.divide(counts.sum(), len(counts) * counts, out=np.zeros_like(counts), where=counts > 0)
    return np.array([weights.get(label, 1.0) for label in schema.class_labels])


def sample_weights(config: Config, schema: DataSchema, targets) -> np.ndarray | None:
    """Per-row training weights from ``train.class_weight`` (balanced: n / (classes * count))."""
    per_class = class_weights(config, schema, Split(targets, targets))
    return None if per_class is None else per_class[class_indices(targets)].astype(np.float32)


def _schedule(config: Config):
    spec = config.optimizer.schedule
    options = spec.engine_options()
    if spec.name == "plateau":  # the direction follows from the monitored value
        options["higher_is_better"] = higher_is_better(spec.monitor)
    return make_schedule(spec.name, config.optimizer.lr, config.train.epochs, **options)


# Rows per forward pass when predicting (Sequential.logits' batch): the work auto weighs there.
PREDICTION_ROWS = 4096


def prediction_device(config: Config, schema: DataSchema, device: str | None = None) -> DeviceChoice:
    """Where a trained run predicts: ``device`` (--device) where given; else the CPU for a run
    trained with ``train.device: cpu`` and auto otherwise, so a run trained on a GPU predicts on
    a machine without one."""
    setting = device or ("cpu" if config.train.device == "cpu" else "auto")
    train = config.train.model_copy(update={"device": setting, "batch_size": PREDICTION_ROWS})
    resolved = config.model_copy(
        update={"train": train, "optimizer": config.optimizer.model_copy(update={"name": "adam"})}
    )
    return choose_device(resolved, schema, PREDICTION_ROWS, flag=device is not None)


def build_trainer(
    config: Config,
    data: PreparedData,
    seeds: Seeds,
    callbacks: Callbacks | None = None,
    *,
    on_epoch_saved=None,
    epoch_end_guard=None,
    blas_threads: int | None = None,
    kernel_threads: int | None = None,
    fused: bool | None = None,
    backend: Backend | None = None,
) -> Trainer:
    """The model, loss, optimizer, schedule and loop a checked config describes, ready to run
    (fit's, each tune trial's in memory, the bench's). The thread counts and ``fused`` default
    to the engine's own choice per problem size (see ``train.TrainSettings``); ``backend`` to
    the device ``train.device`` chooses (``choose_device``)."""
    assert config.train.metrics is not None, "a checked config (check_training_options) names its metrics"
    if backend is None:
        backend = choose_device(config, data.schema, len(data.train)).backend
    model = build_model(config, data.schema, seeds, backend=backend)
    loss = make_loss(config.loss, config.model.output.activation)
    optimizer = make_model_optimizer(config.optimizer.name, model, **config.optimizer.engine_options())
    options = TrainOptions(**dict(config.train), full_batch=config.optimizer.name == "gd")
    per_class = class_weights(config, data.schema, data.train)
    per_row = None
    if per_class is not None and not isinstance(data.train, StoredSplit):  # per row, for batches gathered from arrays
        per_row = per_class[class_indices(data.train.targets)].astype(np.float32)
    training_data = TrainingData(
        data.train,
        data.validation,
        config.task,
        n_classes=len(data.schema.class_labels),
        sample_weight=per_row,
        target_divisor=data.schema.target_divisor,
        class_weights=per_class,
        shuffle=data.shuffle,
    )
    settings = TrainSettings(
        options,
        seeds.shuffle,
        dropout_rng=seeds.dropout,
        schedule=_schedule(config),
        callbacks=callbacks,
        on_epoch_saved=on_epoch_saved,
        epoch_end_guard=epoch_end_guard,
        blas_threads=blas_threads,
        kernel_threads=kernel_threads,
        fused=fused,
    )
    return Trainer(model, loss, optimizer, training_data, settings)


def array_data(config: Config, features: np.ndarray, targets: np.ndarray, class_labels=None) -> PreparedData:
    """Model-ready arrays already in memory as prepared data (no CSV, no scaling, no validation):
    ``features`` float32 [rows, inputs]; ``targets`` class indices into ``class_labels``, or
    values [rows] or [rows, targets] for regression (``class_labels`` None)."""
    n_inputs = features.shape[1]
    target: str | list[str]
    if class_labels is not None:
        task, target = "classification", "target"
    else:
        task = "regression"
        target = "target" if targets.ndim == 1 else [f"target_{index}" for index in range(targets.shape[1])]
        targets = targets.reshape(len(targets), -1).astype(np.float32, copy=False)
    schema = DataSchema(
        target=target,
        task=task,
        feature_names=[f"input_{index}" for index in range(n_inputs)],
        class_labels=[str(label) for label in class_labels] if class_labels is not None else [],
        scaler=Scaler(
            method="none", offset=np.zeros(n_inputs, dtype=np.float32), divisor=np.ones(n_inputs, dtype=np.float32)
        ),
    )
    return PreparedData(config, schema, Split(features, targets), None, None)


def array_trainer(
    settings: Mapping,
    features: np.ndarray,
    targets: np.ndarray,
    class_labels=None,
    *,
    seeds: Seeds | None = None,
    blas_threads: int | None = None,
    kernel_threads: int | None = None,
    fused: bool | None = None,
) -> Trainer:
    """The trainer a config's settings (``model``, ``loss``, ``optimizer``, ``train``, ``seed``,
    as in YAML; no ``data`` needed) describe, on arrays already in memory (see ``array_data``),
    checked as fit checks them. ``seeds``: the random streams (default: from ``seed``)."""
    source = ConfigSource("settings", {}, {})
    config = build_config({"data": {"train": "(arrays)", "target": "target"}, **settings}, source)
    data = array_data(config, features, targets, class_labels)
    config = resolve_config(config, source, data)
    if class_labels is not None and config.loss == "binary_cross_entropy":  # one 0/1 output column
        data.schema.binary = True
        assert isinstance(data.train, Split), "array_data's split is in memory"
        data.train.targets = data.train.targets.astype(np.float32).reshape(-1, 1)
    seeds = seeds or Seeds.from_seed(config.seed)
    return build_trainer(config, data, seeds, blas_threads=blas_threads, kernel_threads=kernel_threads, fused=fused)
