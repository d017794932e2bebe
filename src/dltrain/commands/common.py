"""What every command shares: config and prepared data (``data.prepare``) checked together,
the model and its loop, and a trained run loaded back.

``prepare`` checks a config against its data; ``build_model`` and ``build_trainer`` make the
network and its loop; ``load_run`` rebuilds a trained model from its run folder alone. Nothing
here prints."""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from ..artifacts import read_run
from ..config import DELIMITER_ALIASES, Config, ConfigSource, closest_match
from ..data import DataSchema
from ..data import cache as data_cache
from ..data.csv import DELIMITERS
from ..data.prepare import PreparedData, data_path, prepare_data, resolve_auto
from ..engine import kernels
from ..engine.losses import make_loss
from ..engine.model import Sequential
from ..engine.optimizers import make_model_optimizer
from ..engine.schedules import make_schedule
from ..engine.threads import KERNELS_VARIABLE
from ..errors import ArtifactError, ConfigError, DltrainError, did_you_mean
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
class Seeds:
    """Independent random streams, all derived from the config's one seed."""

    split: np.random.Generator
    init: np.random.Generator
    shuffle: np.random.Generator
    dropout: np.random.Generator

    @classmethod
    def from_seed(cls, seed: int) -> "Seeds":
        return cls(*(np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(4)))


def resolve_config(config: Config, source: ConfigSource, data: PreparedData) -> Config:
    """A config's ``auto`` settings filled in from data already prepared (for another config)."""
    return resolve_auto(config, source, data.schema.task, len(data.schema.class_labels))


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
    data = prepare_data(config, source, base_dir, seeds.split)
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
        return os.path.relpath(data_path(base_dir, value).resolve(), run_dir.resolve())

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
