"""A config file read, overridden by ``--set`` and validated: ``load_config``, and the steps it takes
(``read_config_data``, ``build_config``) for callers that take them one by one."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError, did_you_mean
from ..files import CONFIG_LIMIT, read_regular
from .messages import ConfigSource, validation_message
from .overrides import apply_override, parse_override
from .specs import Config
from .yaml_source import parse_yaml


def build_config(data, source: ConfigSource) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source.name}: the config must be a mapping of keys to values, "
            f"got {type(data).__name__}; see configs/iris.yaml for an example"
        )
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(validation_message(error, data, source)) from None


def read_config_data(path: Path) -> tuple[Any, dict]:
    """The YAML of a config file as plain data (the name filled in), with the position of every key path."""
    if path.suffix.lower() in (".csv", ".tsv"):
        raise ConfigError(
            f"{path}: this is a CSV file, not a config; `dltrain init {path} --target COL` writes a config for it"
        )
    if not os.path.lexists(path):  # never raises, unlike Path.exists on a name too long
        siblings = []
        if path.parent.is_dir():
            siblings = [item.name for item in path.parent.iterdir() if item.suffix.lower() in (".yaml", ".yml")]
        raise ConfigError(f"{path}: config file not found{did_you_mean(path.name, siblings)}")
    payload = read_regular(path, ConfigError, kind="config file", limit=CONFIG_LIMIT)
    try:
        text = payload.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = payload[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte {payload[error.start]:#04x}); save the config as UTF-8"
        ) from None
    data, positions = parse_yaml(text, str(path))
    if data is None:
        raise ConfigError(f"{path}: the config is empty; see configs/iris.yaml for an example")
    if isinstance(data, dict) and "name" not in data:
        # The run's name defaults to the config file's, in the characters a name allows.
        data["name"] = re.sub(r"[^A-Za-z0-9._-]", "-", path.stem).lstrip("._-") or "run"
    return data, positions


def load_config(path, overrides=()) -> tuple[Config, Path, ConfigSource]:
    """Read, override and validate a YAML config.

    Returns the config, the folder its data paths are relative to, and its source (for
    pointing later errors at a line)."""
    path = Path(path)
    data, positions = read_config_data(path)
    override_paths = {}
    for text_item in overrides:
        key_path, value = parse_override(text_item)
        if isinstance(data, dict):
            apply_override(data, key_path, value, text_item)
        override_paths[key_path] = text_item
    source = ConfigSource(str(path), positions, override_paths)
    return build_config(data, source), path.parent, source
