"""`dltrain check`: validate a config and its data and build the model, without training."""

from dataclasses import dataclass

from ..batches import STORE_CHUNK_ROWS
from ..build import build_model, model_memory, prepare_fit
from ..config import Config, load_config
from ..data.prepare import PreparedData
from ..engine.model import Sequential


@dataclass
class CheckResult:
    config: Config
    model: Sequential
    data: PreparedData

    def plan(self) -> str:
        """Where the training data lives and what a fit will take: rows, the store's size on disk,
        the expected peak memory, batches from memory or from the store."""
        placement = self.data.placement
        if placement is None:
            return ""
        schema = self.data.schema
        peak = placement.peak_memory(
            schema.n_inputs, model_memory(self.config, schema, len(self.data.train)), STORE_CHUNK_ROWS
        )
        return placement.describe(peak)


def check(config_path, overrides=()) -> CheckResult:
    """Validate config and data and build the model, without training."""
    config, base_dir, source = load_config(config_path, overrides)
    config, seeds, data = prepare_fit(config, source, base_dir, checking=True)
    return CheckResult(config, build_model(config, data.schema, seeds, source, len(data.train)), data)
