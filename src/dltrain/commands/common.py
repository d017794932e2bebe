"""What every command shares: config -> data -> model, and a trained run loaded back.

``prepare_data`` reads and splits the CSVs and fits the preprocessing on the training rows;
``build_model`` and ``build_trainer`` make the network and its loop; ``load_run`` rebuilds a
trained model from its run folder alone. Nothing here prints."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from ..artifacts import read_run
from ..config import DELIMITER_ALIASES, Config, ConfigSource, closest_match
from ..data import (
    ColumnOptions,
    DataPlan,
    DataSchema,
    Split,
    checked_rows,
    column_encodings,
    infer_target_task,
    plan_data,
    read_features,
    stratified_split,
    target_labels,
)
from ..data import cache as data_cache
from ..data.csv import DELIMITERS, CsvFile
from ..engine import kernels
from ..engine.losses import LOSSES, default_loss, make_loss
from ..engine.model import Sequential
from ..engine.optimizers import make_model_optimizer
from ..engine.schedules import make_schedule
from ..engine.threads import KERNELS_VARIABLE
from ..errors import ArtifactError, ConfigError, DataError, DltrainError, did_you_mean
from ..files import available_memory, decodes_as, human_bytes, text_codec
from ..metrics import (
    CLASSIFICATION_METRICS,
    DEFAULT_METRICS,
    REGRESSION_METRICS,
    class_indices,
    higher_is_better,
    logged_names,
)
from ..train import Callbacks, EarlyStopping, Trainer, TrainingData, TrainOptions, TrainSettings


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
    fail = source.fail

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
        raise source.fail(
            ("data", key),
            f"{path}: file not found"
            f"{did_you_mean(path.name, siblings)}; paths in a config are relative to the config's "
            f"folder ({base_dir.as_posix() if str(base_dir) else '.'}), not to where dltrain runs",
            error=DataError,
        )
    return path


def _data_plan(spec, table: CsvFile, source: ConfigSource) -> DataPlan:
    options = {
        name: ColumnOptions(
            column.type, column.missing, column.fill, column.unknown, column.format, tuple(column.na_values or ())
        )
        for name, column in spec.columns.items()
    }
    return plan_data(
        table, spec.target, spec.features, spec.exclude, options, spec.missing, spec.fill, source, spec.na_values
    )


@dataclass
class _ParsedTraining:
    """The training CSV parsed once: its plan, typed columns, and the rows training may use."""

    table: CsvFile
    plan: DataPlan
    columns: Any
    encodings: list
    rows: np.ndarray
    target_missing: str


def _parse_training_csv(config: Config, source: ConfigSource, base_dir: Path) -> _ParsedTraining:
    spec = config.data
    table = CsvFile.open(
        _config_data_path(base_dir, spec.train, "train", source), spec.delimiter, spec.encoding, spec.decimal
    )
    plan = _data_plan(spec, table, source)
    if len(plan.targets) > 1 and config.task == "classification":
        raise source.fail(
            ("task",),
            "several targets mean multi-output regression; use task: regression (or auto), or give one target",
        )
    target_policies = {plan.target_policy(name) for name in plan.targets}
    if len(target_policies) > 1:
        raise source.fail(("data", "columns"), "give every target the same missing policy (error or drop)")
    target_missing = target_policies.pop()
    plan.read_markers(table)
    cache = data_cache.cache_folder(base_dir) if spec.cache else None
    columns = data_cache.read_columns(table, plan.request(config.task), cache)
    encodings = column_encodings(columns, plan)
    rows = checked_rows(columns, encodings, plan.targets, target_missing, "train")
    rows = np.arange(columns.n_rows) if rows is None else rows
    return _ParsedTraining(table, plan, columns, encodings, rows, target_missing)


def _task_and_labels(config: Config, parsed: _ParsedTraining) -> tuple[str, np.ndarray | None]:
    """The task (given, or guessed from the target) and, for classes, each usable row's label."""
    target, columns = parsed.plan.targets[0], parsed.columns
    raw_target = (columns.text[target] if target in columns.text else columns.numbers(target))[parsed.rows]
    if len(parsed.plan.targets) > 1:
        task = "regression"
    else:
        task = infer_target_task(columns, target, parsed.rows) if config.task == "auto" else config.task
    labels = target_labels(raw_target) if task == "classification" else None
    if labels is not None and len(np.unique(labels)) < 2:
        raise DataError(
            f"{parsed.table.path}: target {target!r} has only one class ({str(labels[0])!r}); "
            "a classifier needs at least two"
        )
    return task, labels


def _split_rows(config: Config, source: ConfigSource, parsed: _ParsedTraining, labels, seeds: Seeds):
    """(training rows, validation rows or None): a fraction held out, stratified by class."""
    spec, rows, path, target = config.data, parsed.rows, parsed.table.path, parsed.plan.targets[0]
    if isinstance(spec.validation, str):
        return rows, None
    if labels is not None and spec.validation > 0:
        classes, counts = np.unique(labels, return_counts=True)
        if counts.min() < 2:
            rare = str(classes[counts.argmin()])
            raise DataError(
                f"{path}: target {target!r}: class {rare!r} has only 1 row; a stratified validation "
                "split needs at least 2 rows per class. Add rows of it or remove it"
                + (", set task: regression if the target is a quantity" if config.task == "auto" else "")
                + ", or give data.validation a CSV file"
            )
    train_positions, validation_positions = stratified_split(labels, len(rows), spec.validation, seeds.split)
    if spec.validation > 0 and len(validation_positions) == 0:
        raise source.fail(
            ("data", "validation"),
            f"{spec.validation:g} of {len(rows)} rows "
            f"leaves no validation rows{' once each class is split' if labels is not None else ''}; "
            "raise it, give a CSV file, or set 0 to train without validation",
        )
    if not len(train_positions):
        raise DataError(
            f"{path}: {len(rows)} usable row{'s' if len(rows) != 1 else ''} and data.validation: "
            f"{spec.validation:g} leave no rows to train on; add rows, or lower data.validation "
            "(0 trains on every row)"
        )
    if labels is not None and len(np.unique(labels[train_positions])) < 2:
        raise DataError(f"{path}: the training split has only one class; lower data.validation")
    return rows[train_positions], rows[validation_positions]


def prepare_data(config: Config, source: ConfigSource, base_dir: Path, seeds: Seeds) -> PreparedData:
    """Read the CSVs, type the columns, resolve ``auto`` settings, split, fit preprocessing on train only."""
    spec = config.data
    parsed = _parse_training_csv(config, source, base_dir)
    task, labels = _task_and_labels(config, parsed)
    config = _resolve(config, source, task, len(np.unique(labels)) if labels is not None else 0)
    train_rows, validation_rows = _split_rows(config, source, parsed, labels, seeds)
    columns = parsed.columns
    csv_options = {
        "delimiter": spec.delimiter,
        "decimal": spec.decimal,
        "encoding": spec.encoding,
        "na_values": list(parsed.plan.na_values),
        "column_na_values": parsed.plan.column_na_values(),
    }
    schema = DataSchema.fit(
        columns,
        parsed.encodings,
        train_rows,
        parsed.rows,
        parsed.plan.targets,
        task,
        spec.scale,
        parsed.target_missing,
        csv_options,
        spec.target_scale,
    )
    schema.binary = config.loss == "binary_cross_entropy"
    validation = None
    if isinstance(spec.validation, str):
        path = _config_data_path(base_dir, spec.validation, "validation", source)
        validation = Split(*read_features(path, schema, with_target=True))
    elif validation_rows is not None and len(validation_rows):
        validation = Split(
            schema.encode_features(columns, validation_rows), schema.encode_target(columns, validation_rows)
        )
    # Last, as it may reuse the parsed matrix in place instead of copying the training rows.
    train_targets = schema.encode_target(columns, train_rows)
    train = Split(schema.encode_features(columns, train_rows, in_place=True), train_targets)
    test = None
    if spec.test is not None:
        test = Split(*read_features(_config_data_path(base_dir, spec.test, "test", source), schema, with_target=True))
    return PreparedData(config, schema, train, validation, test)


# Bytes per parameter while training: the float32 weight, its gradient, two optimizer moments,
# and the float64 draw the initializer makes before it is copied in.
_BYTES_PER_PARAMETER = 4 * 4 + 8


_TRAIN_BYTES_PER_UNIT = 4 * 4  # per row of a batch: a layer's output, activation, and their gradients


_PREDICT_BYTES_PER_UNIT = 4 * 2  # per row of a prediction batch: output and activation


_PREDICT_ROWS = 4096  # Sequential.logits' batch


def prepare(config: Config, source: ConfigSource, base_dir: Path) -> tuple[Config, Seeds, PreparedData]:
    """Config and data checked together, as fit and check both need them: the CSVs read and split,
    every ``auto`` resolved, the training options checked, and the model's memory estimated."""
    seeds = Seeds.from_seed(config.seed)
    data = prepare_data(config, source, base_dir, seeds)
    config = check_training_options(data.config, source, data)
    check_model_memory(config, data.schema, source, len(data.train))  # before a run folder is made
    return config, seeds, data


def check_model_memory(config: Config, schema: DataSchema, source: ConfigSource, train_rows: int | None = None) -> None:
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
    sizes = [
        (index, fan_in, fan_out, (fan_in + 1) * fan_out * _BYTES_PER_PARAMETER + fan_out * per_unit)
        for index, fan_in, fan_out in shapes
    ]
    needed = sum(size for *_, size in sizes)
    available = available_memory()
    if needed <= available:
        return
    index, fan_in, fan_out, size = max(sizes, key=lambda item: item[3])
    if index is None:
        path, layer = ("model", "output"), f"the output layer ({fan_in} inputs x {fan_out} outputs)"
    else:
        path, layer = ("model", "layers", index, "units"), f"dense layer {index} ({fan_in} inputs x {fan_out} units)"
    raise source.fail(
        path,
        f"{layer} needs {human_bytes(size)} "
        f"({(fan_in + 1) * fan_out:,} parameters with their gradients and optimizer state, and a "
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
) -> Sequential:
    """The network a config describes, for a fitted schema; refused when it cannot fit in memory."""
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
    )


def relocate_paths(config: Config, base_dir: Path, run_dir: Path) -> Config:
    """Rewrite data paths relative to the run folder, so its config.yaml trains again as it is."""

    def moved(value):
        if value is None:
            return None
        return os.path.relpath(_data_path(base_dir, value).resolve(), run_dir.resolve())

    spec = config.data
    validation = moved(spec.validation) if isinstance(spec.validation, str) else spec.validation
    data = spec.model_copy(update={"train": moved(spec.train), "test": moved(spec.test), "validation": validation})
    return config.model_copy(update={"data": data})


def check_training_options(config: Config, source: ConfigSource, data: PreparedData) -> Config:
    """Fill in the logged metrics and check monitors and class weights against the data."""
    task = config.task
    n_classes = len(data.schema.class_labels)
    choices = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    metrics = config.train.metrics if config.train.metrics is not None else DEFAULT_METRICS[task]
    for index, name in enumerate(metrics):
        if name not in choices:
            raise source.fail(
                ("train", "metrics", index), f"{name} is not a {task} metric; choose from {', '.join(choices)}"
            )
        if name == "roc_auc" and n_classes != 2:
            raise source.fail(("train", "metrics", index), f"roc_auc needs two classes, the target has {n_classes}")
    config = config.model_copy(update={"train": config.train.model_copy(update={"metrics": list(metrics)})})
    logged = logged_names(config.train.metrics, data.validation is not None)
    monitors = [(("train", "early_stopping", "monitor"), config.train.early_stopping)]
    if config.optimizer.schedule.name == "plateau":
        monitors.append((("optimizer", "schedule", "monitor"), config.optimizer.schedule))
    for path, spec in monitors:
        if spec is not None and spec.monitor not in logged:
            no_validation = data.validation is None and spec.monitor.startswith("val_")
            hint = " (there is no validation data: set data.validation)" if no_validation else ""
            raise source.fail(
                path,
                f"{spec.monitor!r} is not logged{hint}"
                f"{closest_match(spec.monitor, logged)}; logged values: {', '.join(logged)}",
            )
    weights = config.train.class_weight
    if isinstance(weights, dict):
        unknown = sorted(set(weights) - set(data.schema.class_labels))
        if task != "classification" or unknown:
            raise source.fail(
                ("train", "class_weight"),
                ""
                + (
                    f"unknown class {unknown[0]!r}; classes are {', '.join(data.schema.class_labels)}"
                    if task == "classification"
                    else "only for classification"
                ),
            )
    elif weights == "balanced" and task != "classification":
        raise source.fail(("train", "class_weight"), "only for classification")
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


def build_trainer(
    config: Config,
    data: PreparedData,
    seeds: Seeds,
    callbacks: Callbacks | None = None,
    *,
    on_epoch_saved=None,
    epoch_end_guard=None,
    blas_threads: int | None = None,
) -> Trainer:
    """The model, loss, optimizer, schedule and loop a checked config describes, ready to run
    (fit's, and each tune trial's in memory)."""
    model = build_model(config, data.schema, seeds)
    loss = make_loss(config.loss, config.model.output.activation)
    optimizer = make_model_optimizer(config.optimizer.name, model, **config.optimizer.engine_options())
    schedule_spec = config.optimizer.schedule
    schedule = make_schedule(
        schedule_spec.name, config.optimizer.lr, config.train.epochs, **schedule_spec.engine_options()
    )
    if schedule_spec.name == "plateau":
        schedule.higher_is_better = higher_is_better(schedule_spec.monitor)
    stopping = None
    if config.train.early_stopping is not None:
        stopping = EarlyStopping(**config.train.early_stopping.model_dump())
    options = TrainOptions(
        config.train.epochs,
        config.train.batch_size,
        config.train.shuffle,
        config.train.tolerance,
        full_batch=config.optimizer.name == "gd",
        metrics=tuple(config.train.metrics),
    )
    training_data = TrainingData(
        data.train,
        data.validation,
        config.task,
        n_classes=len(data.schema.class_labels),
        sample_weight=sample_weights(config, data.schema, data.train.targets),
        target_divisor=data.schema.target_divisor,
    )
    settings = TrainSettings(
        options,
        seeds.shuffle,
        dropout_rng=seeds.dropout,
        schedule=schedule,
        early_stopping=stopping,
        callbacks=callbacks,
        on_epoch_saved=on_epoch_saved,
        epoch_end_guard=epoch_end_guard,
        blas_threads=blas_threads,
    )
    return Trainer(model, loss, optimizer, training_data, settings)


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
    if (
        isinstance(data, dict)
        and "target_scaler" not in data
        and isinstance(config, dict)
        and isinstance(config.get("data"), dict)
    ):
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
        raise ArtifactError(
            f"{run_dir / 'model.json'}: the stored config is invalid at "
            f"{'.'.join(map(str, first['loc']))} ({first['msg']}); train again"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
        raise ArtifactError(
            f"{run_dir / 'model.json'}: the stored data schema is invalid ({error!r}); train again"
        ) from None
    if schema.task == "classification" and (
        len(schema.class_labels) < 2 or (schema.binary and len(schema.class_labels) != 2)
    ):
        raise ArtifactError(
            f"{run_dir / 'model.json'}: the stored class labels {schema.class_labels} do not fit "
            "the model; the file was changed, train again"
        )
    try:
        model = build_model(config, schema, source=ConfigSource(str(run_dir / "model.json"), {}, {}))
    except ConfigError as error:
        raise ArtifactError(str(error)) from None
    try:
        model.load_state(arrays)
    except (KeyError, ValueError) as error:
        raise ArtifactError(f"{run_dir / 'model.npz'}: does not fit the stored model ({error}); train again") from None
    return LoadedRun(run_dir, config, schema, model, manifest)


def _check_argument_order(command: str, run_dir, data_path):
    """``dltrain predict data.csv runs/x``: the two arguments are swapped; say so."""
    run_dir, data_path = Path(run_dir), Path(data_path)
    if run_dir.is_file():
        if data_path.is_dir():
            raise ArtifactError(
                f"the arguments are swapped: {run_dir} is a file and {data_path} a folder; "
                f"write: dltrain {command} {data_path} {run_dir}"
            )
        raise ArtifactError(
            f"{run_dir}: is a file, not a run folder; the run folder comes first: dltrain {command} RUN_DIR DATA.csv"
        )


def file_dialect(schema: DataSchema, data_path, dialect: dict, on_note=None) -> dict:
    """The dialect to read a file from elsewhere with (eval, predict): as given, except that
    without --encoding a file that is not UTF-8 is read in the encoding the run was trained on
    (its data.encoding, e.g. latin-1), and ``on_note`` is told so."""
    if dialect.get("encoding") is not None:
        return dialect
    try:
        trained = text_codec(schema.encoding)
    except ValueError:
        return dialect
    if trained == text_codec("utf-8") or decodes_as(data_path, text_codec("utf-8")):
        return dialect
    if on_note is not None:
        on_note(
            f"{data_path} is not UTF-8 text; reading it as {schema.encoding}, the encoding the run was "
            "trained with (data.encoding); pass --encoding to read it as another"
        )
    return {**dialect, "encoding": schema.encoding}


def csv_dialect(delimiter: str | None = None, encoding: str | None = None) -> dict:
    """The ``--delimiter``/``--encoding`` of eval and predict, checked (None: detect, and UTF-8)."""
    if delimiter is not None:
        delimiter = DELIMITER_ALIASES.get(delimiter, delimiter)
        if delimiter not in DELIMITERS:
            raise ConfigError(f"--delimiter {delimiter!r}: use one of , ; tab |, or leave it out to detect it")
    return {"delimiter": delimiter, "encoding": encoding}


def check_environment(environ=os.environ) -> None:
    """The DLTRAIN_* variables dltrain reads, checked before any command runs: a value it
    cannot use is one message naming the variable, never a setting silently ignored."""
    try:
        kernels.setting(environ)
    except ValueError:
        value = environ.get(KERNELS_VARIABLE, "")
        raise DltrainError(
            f"{KERNELS_VARIABLE}={value}: not a setting{did_you_mean(value.strip().lower(), kernels.SETTINGS)}; "
            f"set it to {' or '.join(kernels.SETTINGS)} (auto, the default: the fused kernels where "
            "they pay; reference: the plain NumPy path everywhere), or unset it"
        ) from None
    data_cache.configured_folder(environ)
