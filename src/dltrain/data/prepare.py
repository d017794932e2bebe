"""The whole CSV -> model-ready arrays step, in one call: ``prepare_data``.

In order: the training CSV is parsed (through the cache) as the config's data section plans;
the task is taken from the config or guessed from the target, and with it every ``auto`` of
the loss and output activation (the loss decides how classes are encoded: one 0/1 column for
binary cross-entropy); the usable rows are split into training and validation by the split
rules below; the preprocessing is fitted on the training rows only; and every split is
encoded. Each rule's message names the file, the key and what to do.

``prepare_folds`` does the same for K-fold cross-validation: the usable rows in K folds
(stratified by class), each fold's preprocessing fitted on the other K - 1."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import Config, ConfigSource, DataSpec
from ..engine.losses import LOSSES, default_loss
from ..errors import DataError, did_you_mean
from . import cache as data_cache
from .checks import checked_rows, row_type
from .columns import column_encodings
from .csv import CsvFile
from .parsed import Columns
from .placement import Placement, place
from .plan import ColumnOptions, DataPlan, plan_data
from .rows import read_features
from .schema import DataSchema
from .split import EncodedSplit, Split, StoredSplit, class_counts, stratified_folds, stratified_split
from .store import StoreFull
from .targets import infer_target_task, target_classes


@dataclass
class PreparedData:
    """The data package's product: the resolved config, the fitted preprocessing, and the splits
    (arrays in memory, or rows of the on-disk store: see placement.py)."""

    config: Config
    schema: DataSchema
    train: Split | StoredSplit | EncodedSplit
    validation: Split | StoredSplit | EncodedSplit | None
    test: Split | None
    placement: Placement | None = None  # where the training data lives (None: arrays given in memory)

    @property
    def shuffle(self) -> str:
        """How batches from the store are shuffled: rows or blocks (see batches.StoredBatches)."""
        return self.placement.shuffle if self.placement is not None else "rows"


def data_path(base_dir: Path, value: str) -> Path:
    """A data path from the config, relative to the config's folder (kept short for messages)."""
    path = Path(value)
    return path if path.is_absolute() else Path(os.path.normpath(base_dir / path))


def _existing_data_path(base_dir: Path, value: str, key: str, source: ConfigSource) -> Path:
    """A data path from the config that exists; if not, say where relative paths start."""
    path = data_path(base_dir, value)
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


def _data_plan(spec: DataSpec, table: CsvFile, source: ConfigSource) -> DataPlan:
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
    columns: Columns
    encodings: list
    rows: np.ndarray | None  # None: every row (no list of a big file's row numbers kept)
    target_missing: str
    placement: Placement
    # classes: the labels, as text (their sorted order is each label's code)
    class_names: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=str))

    @property
    def n_rows(self) -> int:
        return self.columns.n_rows if self.rows is None else len(self.rows)

    def at(self, positions: np.ndarray) -> np.ndarray:
        """The rows at ``positions`` among the usable rows."""
        return positions if self.rows is None else self.rows[positions]


def _parse_training_csv(
    config: Config, source: ConfigSource, base_dir: Path, in_memory: bool = False, checking: bool = False
) -> _ParsedTraining:
    spec = config.data
    table = CsvFile.open(
        _existing_data_path(base_dir, spec.train, "train", source), spec.delimiter, spec.encoding, spec.decimal
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
    request = plan.request(config.task)
    placement = place(False if in_memory else spec.store, spec.shuffle, table, request)
    # A check trains nothing: with data.cache: false a store it wrote would only be thrown away,
    # so it parses into memory while the columns fit there (the plan still says where a fit reads).
    mapped = placement.from_store and not (checking and not spec.cache and placement.fits_in_memory())
    cache = data_cache.cache_folder(base_dir) if spec.cache or mapped else None
    columns = data_cache.read_columns(table, request, cache, mapped=mapped, keep=spec.cache)
    placement.parsed(columns)
    placement.folder = cache
    encodings = column_encodings(columns, plan)
    rows = checked_rows(columns, encodings, plan.targets, target_missing, "train")
    return _ParsedTraining(table, plan, columns, encodings, rows, target_missing, placement)


def _task_and_labels(config: Config, parsed: _ParsedTraining) -> tuple[str, np.ndarray | None]:
    """The task (given, or guessed from the target) and, for classes, each usable row's class
    (its code: the place of its label in ``parsed.class_names``, which this sets)."""
    target, columns = parsed.plan.targets[0], parsed.columns
    if len(parsed.plan.targets) > 1:
        task = "regression"
    else:
        task = infer_target_task(columns, target, parsed.rows) if config.task == "auto" else config.task
    if task != "classification":
        return task, None
    parsed.class_names, labels = target_classes(columns, target, parsed.rows)
    if len(parsed.class_names) < 2:
        raise DataError(
            f"{parsed.table.path}: target {target!r} has only one class ({str(parsed.class_names[0])!r}); "
            "a classifier needs at least two"
        )
    return task, labels


def resolve_auto(config: Config, source: ConfigSource, task: str, n_classes: int) -> Config:
    """``config`` with the task, its loss and output activation filled in (``auto``: from the
    task and the number of classes), refusing combinations that cannot train."""
    loss = default_loss(task, n_classes) if config.loss == "auto" else config.loss
    problem = LOSSES[loss].task_problem(task, n_classes)
    if problem:
        raise source.fail(("loss",), problem)
    activation = config.model.output.activation
    if activation == "auto":
        activation = LOSSES[loss].default_activation
    problem = LOSSES[loss].activation_problem(activation)
    if problem:
        raise source.fail(("model", "output", "activation"), problem)
    output = config.model.output.model_copy(update={"activation": activation})
    model = config.model.model_copy(update={"output": output})
    return config.model_copy(update={"task": task, "loss": loss, "model": model})


def _split_rows(config: Config, source: ConfigSource, parsed: _ParsedTraining, labels, split_rng, guessed: bool):
    """(training rows, validation rows or None): a fraction held out, stratified by class.
    ``guessed``: the task was guessed (task: auto) from a target of numbers."""
    spec, n_rows, path, target = config.data, parsed.n_rows, parsed.table.path, parsed.plan.targets[0]
    if isinstance(spec.validation, str):
        return parsed.at(np.arange(n_rows, dtype=row_type(n_rows))), None
    counts = class_counts(labels, len(parsed.class_names)) if labels is not None else None
    if counts is not None and spec.validation > 0:
        if counts.min() < 2:
            rare = str(parsed.class_names[counts.argmin()])
            raise DataError(
                f"{path}: target {target!r}: class {rare!r} has only 1 row; a stratified validation "
                "split needs at least 2 rows per class. Add rows of it or remove it"
                + (", set task: regression if the target is a quantity" if guessed else "")
                + ", or give data.validation a CSV file"
            )
    train_positions, validation_positions = stratified_split(labels, n_rows, spec.validation, split_rng)
    if spec.validation > 0 and len(validation_positions) == 0:
        raise source.fail(
            ("data", "validation"),
            f"{spec.validation:g} of {n_rows} rows "
            f"leaves no validation rows{' once each class is split' if labels is not None else ''}; "
            "raise it, give a CSV file, or set 0 to train without validation",
        )
    if not len(train_positions):
        raise DataError(
            f"{path}: {n_rows} usable row{'s' if n_rows != 1 else ''} and data.validation: "
            f"{spec.validation:g} leave no rows to train on; add rows, or lower data.validation "
            "(0 trains on every row)"
        )
    if counts is not None and np.count_nonzero(counts - class_counts(labels[validation_positions], len(counts))) < 2:
        raise DataError(f"{path}: the training split has only one class; lower data.validation")
    return parsed.at(train_positions), parsed.at(validation_positions)


def _fit_schema(config: Config, parsed: _ParsedTraining, train_rows: np.ndarray) -> DataSchema:
    """The preprocessing fitted on the training rows (categories and class labels on every usable row)."""
    spec = config.data
    csv_options = {
        "delimiter": spec.delimiter,
        "decimal": spec.decimal,
        "encoding": spec.encoding,
        "na_values": list(parsed.plan.na_values),
        "column_na_values": parsed.plan.column_na_values(),
    }
    schema = DataSchema.fit(
        parsed.columns,
        parsed.encodings,
        train_rows,
        parsed.rows,
        parsed.plan.targets,
        config.task,
        spec.scale,
        parsed.target_missing,
        csv_options,
        spec.target_scale,
    )
    schema.binary = config.loss == "binary_cross_entropy"
    return schema


def prepare_data(
    config: Config,
    source: ConfigSource,
    base_dir: Path,
    split_rng: np.random.Generator,
    in_memory: bool = False,
    checking: bool = False,
) -> PreparedData:
    """Read the CSVs, type the columns, resolve ``auto`` settings, split, fit preprocessing on train only.

    ``base_dir``: the folder the config's data paths are relative to; ``split_rng``: the
    random stream of the validation split; ``in_memory``: splits as arrays whatever data.store
    says (tune's trials select input columns of them); ``checking``: for `dltrain check`, which
    trains nothing: the splits are left as rows of the parsed columns (StoredSplit), never
    encoded, and with data.cache: false the file is parsed into memory while it fits there."""
    spec = config.data
    parsed = _parse_training_csv(config, source, base_dir, in_memory, checking)
    task, labels = _task_and_labels(config, parsed)
    guessed = config.task == "auto" and parsed.plan.targets[0] not in parsed.columns.text
    config = resolve_auto(config, source, task, len(parsed.class_names) if labels is not None else 0)
    config = config.model_copy(update={"data": spec.model_copy(update={"shuffle": parsed.placement.shuffle})})
    train_rows, validation_rows = _split_rows(config, source, parsed, labels, split_rng, guessed)
    del labels
    schema = _fit_schema(config, parsed, train_rows)
    columns = parsed.columns
    validation: Split | StoredSplit | EncodedSplit | None = None
    if isinstance(spec.validation, str):
        path = _existing_data_path(base_dir, spec.validation, "validation", source)
        validation = Split(*read_features(path, schema, with_target=True))
    elif validation_rows is not None and len(validation_rows):
        validation = _split(columns, validation_rows, schema, parsed.placement, "validation", checking)
    # Last, as it may reuse the parsed matrix in place instead of copying the training rows.
    train = _split(columns, train_rows, schema, parsed.placement, "train", checking, in_place=True)
    test = None
    if spec.test is not None:
        test = Split(*read_features(_existing_data_path(base_dir, spec.test, "test", source), schema, with_target=True))
    return PreparedData(config, schema, train, validation, test, parsed.placement)


def _split(
    columns: Columns, rows: np.ndarray, schema: DataSchema, placement: Placement, name: str, checking, in_place=False
):
    """The rows as a split. From the store: shuffled by rows, their model inputs encoded once
    into a file beside it (mapped); by blocks, left in the store and encoded a chunk at a time.
    In memory: encoded now (with ``in_place``, the training rows are moved to the front of the
    parsed matrix, not copied). ``checking``: never encoded (a check trains nothing)."""
    if checking:
        return StoredSplit(columns, rows, schema)
    if placement.from_store:
        split = StoredSplit(columns, rows, schema)
        if placement.shuffle == "blocks" or placement.folder is None:
            return split
        return EncodedSplit(split, lambda: _encoded(split, placement.folder, name))
    targets = schema.encode_target(columns, rows)
    return Split(schema.encode_features(columns, rows, in_place=in_place), targets)


def _encoded(split: StoredSplit, cache: Path, name: str) -> Split:
    """The split's model inputs encoded into a file in the cache folder, mapped."""
    folder = data_cache.scratch_folder(cache, "inputs")
    try:
        return split.encoded(folder / f"{name}.npy")
    except StoreFull as error:
        raise data_cache.full_disk(cache, f"the model inputs and targets of the {name} rows", error) from None
    finally:  # a mapped file stays readable once removed (where the system allows it; else at exit)
        shutil.rmtree(folder, ignore_errors=True)


def _check_fold_rows(config: Config, parsed: _ParsedTraining, labels, k: int, setting: str):
    """Rows enough for K folds: each fold holds some of every class, and at least 2 rows."""
    n_rows, path, target = parsed.n_rows, parsed.table.path, parsed.plan.targets[0]
    if labels is not None:
        classes, counts = np.unique(labels, return_counts=True)
        if counts.min() < k:
            rare, count = str(parsed.class_names[classes[counts.argmin()]]), int(counts.min())
            raise DataError(
                f"{path}: target {target!r}: class {rare!r} has only {count} row{'s' if count != 1 else ''}; "
                f"{k}-fold cross-validation ({setting}) holds out some rows of every class in each fold, "
                f"so it needs at least {k} rows per class. Add rows of it or remove it, or use fewer folds"
                + (", or set task: regression if the target is a quantity" if config.task == "auto" else "")
            )
    elif n_rows < 2 * k:
        raise DataError(
            f"{path}: {n_rows} usable row{'s' if n_rows != 1 else ''} are too few for {k}-fold "
            f"cross-validation ({setting}): each fold needs at least 2 rows to be scored on; use fewer folds"
        )


def _early_stopping_rows(
    fraction: float, parsed: _ParsedTraining, labels, positions, setting: str, split_rng
) -> tuple[np.ndarray, np.ndarray]:
    """A fold's training rows split as the config splits the file (``data.validation``'s
    ``fraction``): (rows to fit, rows to watch)."""
    path = parsed.table.path
    fold_labels = labels[positions] if labels is not None else None
    fit, watch = stratified_split(fold_labels, len(positions), fraction, split_rng)
    if not len(watch) or not len(fit):
        raise DataError(
            f"{path}: data.validation: {fraction:g} of a fold's {len(positions)} training rows leaves "
            f"{'no validation' if not len(watch) else 'no training'} rows for {setting}; "
            "add rows, use fewer folds, or change data.validation"
        )
    if fold_labels is not None and len(np.unique(fold_labels[fit])) < 2:
        raise DataError(f"{path}: a fold's training rows have only one class once data.validation is held out")
    return parsed.at(positions[fit]), parsed.at(positions[watch])


def prepare_folds(
    config: Config, source: ConfigSource, base_dir: Path, k: int, split_rng: np.random.Generator, setting: str
) -> list[PreparedData]:
    """K-fold cross-validation's data: the training CSV's usable rows dealt into ``k`` folds
    (stratified by class; ``split_rng`` deals them), one PreparedData per fold.

    Each fold is the config's own fit made on the other K - 1 folds' rows: they are split as
    ``data.validation`` says (its fraction held out to watch, for early stopping and the
    per-epoch values; or its CSV), the preprocessing is fitted on the rows that train, and the
    fold's own rows, which nothing in training sees, are its ``test`` split, to be scored once
    the model is trained. With ``data.validation: 0`` (no early stopping then) the fold's rows
    are also its validation split, for the per-epoch values. ``setting`` names what asked for the
    folds in messages (``tune.cv: 5``, ``--cv 5``)."""
    spec = config.data
    parsed = _parse_training_csv(config, source, base_dir, in_memory=True)
    task, labels = _task_and_labels(config, parsed)
    _check_fold_rows(config, parsed, labels, k, setting)  # before auto is resolved: its hint needs to know
    config = resolve_auto(config, source, task, len(parsed.class_names) if labels is not None else 0)
    columns, folds = parsed.columns, []
    for train_positions, held_out_positions in stratified_folds(labels, parsed.n_rows, k, split_rng):
        held_out_rows = parsed.at(held_out_positions)
        watch_rows = None
        if isinstance(spec.validation, str) or not spec.validation:
            train_rows = parsed.at(train_positions)
        else:
            train_rows, watch_rows = _early_stopping_rows(
                spec.validation, parsed, labels, train_positions, setting, split_rng
            )
        schema = _fit_schema(config, parsed, train_rows)
        held_out = Split(schema.encode_features(columns, held_out_rows), schema.encode_target(columns, held_out_rows))
        if isinstance(spec.validation, str):
            path = _existing_data_path(base_dir, spec.validation, "validation", source)
            validation = Split(*read_features(path, schema, with_target=True))
        elif watch_rows is not None:
            validation = Split(schema.encode_features(columns, watch_rows), schema.encode_target(columns, watch_rows))
        else:
            validation = held_out
        train = Split(schema.encode_features(columns, train_rows), schema.encode_target(columns, train_rows))
        folds.append(PreparedData(config, schema, train, validation, held_out))
    return folds
