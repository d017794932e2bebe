"""The starter config put together: the CSV read, its columns described, a network and a schedule
sized to the data, the YAML checked to load, then written."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ...config import ConfigSource, build_config, parse_yaml
from ...errors import ConfigError
from ...files import check_writable, write_output
from .columns import column_reports, profile_target
from .reading import read_for_init, refuse_json
from .sections import column_lines, data_lines, model_and_training_lines, tune_lines, yaml_scalar

TARGET_UPDATES = 3000  # epochs are chosen to give about this many optimizer steps


@dataclass
class StarterConfig:
    text: str
    features: list[str]
    excluded: dict
    task: str
    n_inputs: int
    classes: list[str]
    warnings: list[str] = field(default_factory=list)


def _training_sizes(n_inputs: int, kept_rows: int) -> dict:
    """A network and a schedule sized to the data: about TARGET_UPDATES steps, early stopping."""
    train_rows = max(1, int(kept_rows * 0.8))
    batch_size = 32 if train_rows < 10_000 else 128
    batches = math.ceil(train_rows / batch_size)
    epochs = int(min(200, max(10, math.ceil(TARGET_UPDATES / batches))))
    units = 16 if n_inputs <= 8 else 32 if n_inputs <= 64 else 64 if n_inputs <= 256 else 128
    return {
        "batch_size": batch_size,
        "batches": batches,
        "epochs": epochs,
        # About a tenth of the epochs: small data (many short, noisy epochs) waits longer.
        "patience": int(min(20, max(5, epochs // 10))),
        "learning_rate": 0.01 if train_rows < 5_000 else 0.001,
        "layers": [units, units] if train_rows >= 5_000 else [units],
        "train_rows": train_rows,
    }


def starter_config(data_path, target, out_path, encoding: str = "utf-8") -> StarterConfig:
    """The YAML text of a starter config for ``data_path`` predicting ``target`` (a column, or a list of
    numeric columns for multi-target regression), to be saved at ``out_path``."""
    data_path, out_path = Path(data_path), Path(out_path)
    targets = [target] if isinstance(target, str) else list(target)
    repeated = sorted({name for name in targets if targets.count(name) > 1})
    if repeated:
        raise ConfigError(f"--target {repeated[0]} is given twice; name each target once")
    refuse_json(data_path, encoding)
    table, columns, others, all_filled, markers = read_for_init(data_path, targets, encoding)
    reports = column_reports(data_path, columns, others, markers)
    features = [report for report in reports if report.excluded is None]
    profile = profile_target(data_path, targets, columns, all_filled)
    profile.warnings[:0] = markers.warnings
    n_inputs = sum(report.width for report in features)
    sizes = _training_sizes(n_inputs, int(profile.present.size))
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", data_path.stem).strip("-._") or "model"
    name = name if name[0].isalnum() else f"run-{name}"
    lines = [
        f"# Starter config written by `dltrain init {data_path.name} "
        f"{' '.join(f'--target {name}' for name in targets)}`.",
        f"# {columns.n_rows} rows, {len(table.header)} columns. Train it with: dltrain fit {out_path.name}",
        *[f"# warning: {warning}" for warning in profile.warnings],
        f"name: {yaml_scalar(name)}",
        "seed: 0",
        *data_lines(data_path, out_path, targets, table, reports, profile.classes, encoding, markers),
        *column_lines(features, targets, profile, columns, markers),
        *model_and_training_lines(profile, n_inputs, sizes, any(report.kind == "date" for report in features)),
        *tune_lines(sizes, out_path.name),
    ]
    excluded = {report.name: report.excluded for report in reports if report.excluded}
    return StarterConfig(
        "\n".join(lines),
        [report.name for report in features],
        excluded,
        profile.task,
        n_inputs,
        profile.classes,
        profile.warnings,
    )


def write_starter_config(data_path, target, out_path, force: bool = False, encoding: str = "utf-8") -> StarterConfig:
    """Write the starter config to ``out_path`` (refusing to overwrite unless ``force``)."""
    out_path = Path(out_path)
    if out_path.exists() and not force:
        raise ConfigError(f"{out_path}: already exists; pass --force to overwrite it, or choose another --out")
    if out_path.is_dir():
        raise ConfigError(f"{out_path}: is a folder; give --out a file name such as config.yaml")
    check_writable(out_path, make_parents=True)
    starter = starter_config(data_path, target, out_path, encoding)
    data, positions = parse_yaml(starter.text, str(out_path))
    build_config(data, ConfigSource(str(out_path), positions, {}))  # a config that does not load is our bug
    try:
        write_output(out_path, starter.text)
    except OSError as error:
        raise ConfigError(f"{out_path}: cannot write ({error.strerror or error})") from None
    return starter
