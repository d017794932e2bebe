"""The YAML config: pydantic specs, loading with line numbers, and ``--set`` overrides.

Every mistake becomes one ConfigError of the form
``iris.yaml:7:5: model.layers[0].units: must be > 0 (got -3)``.

The pieces, in the order a config passes through them: yaml_source.py (YAML with the position of
every key), overrides.py (``--set``), specs.py with base.py, data_spec.py and tune_spec.py (the
pydantic specs, one module per large section), messages.py (where a mistake is and what it
says), load.py (the steps in one call). The names other modules use are here.
"""

from .data_spec import DELIMITER_ALIASES, ColumnSpec, DataSpec
from .load import build_config, load_config, read_config_data
from .messages import ConfigSource, closest_match, dotted, validation_message
from .overrides import apply_override, parse_override
from .specs import (
    Config,
    DenseSpec,
    DropoutSpec,
    EarlyStoppingSpec,
    ModelSpec,
    OptimizerSpec,
    OutputSpec,
    ScheduleSpec,
    TrainSpec,
    describe_layers,
    json_schema,
)
from .tune_spec import RangeSpec, TuneSpec
from .yaml_source import dump_config, parse_yaml

__all__ = [
    "DELIMITER_ALIASES",
    "ColumnSpec",
    "Config",
    "ConfigSource",
    "DataSpec",
    "DenseSpec",
    "DropoutSpec",
    "EarlyStoppingSpec",
    "ModelSpec",
    "OptimizerSpec",
    "OutputSpec",
    "RangeSpec",
    "ScheduleSpec",
    "TrainSpec",
    "TuneSpec",
    "apply_override",
    "build_config",
    "closest_match",
    "describe_layers",
    "dotted",
    "dump_config",
    "json_schema",
    "load_config",
    "parse_override",
    "parse_yaml",
    "read_config_data",
    "validation_message",
]
