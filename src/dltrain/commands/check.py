"""`dltrain check`: validate a config and its data and build the model, without training."""

from dataclasses import dataclass

from ..build import build_model, prepare_fit
from ..config import Config, load_config
from ..data.prepare import PreparedData
from ..engine.model import Sequential


@dataclass
class CheckResult:
    config: Config
    model: Sequential
    data: PreparedData


def check(config_path, overrides=()) -> CheckResult:
    """Validate config and data and build the model, without training."""
    config, base_dir, source = load_config(config_path, overrides)
    config, seeds, data = prepare_fit(config, source, base_dir)
    return CheckResult(config, build_model(config, data.schema, seeds, source, len(data.train)), data)
