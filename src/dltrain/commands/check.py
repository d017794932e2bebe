"""`dltrain check`: validate a config and its data and build the model, without training."""

from dataclasses import dataclass

from ..config import Config, load_config
from ..engine.model import Sequential
from .common import PreparedData, Seeds, build_model, check_training_options, prepare_data

_OUTPUT_FOR_LOSS = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid", "mse": "linear"}


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
    return CheckResult(config, build_model(config, data.schema, seeds, source, len(data.train)), data)
