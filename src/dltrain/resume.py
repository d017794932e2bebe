"""``fit --resume``: what may differ between a run's checkpoint and the config and data that continue
it (the epochs and the stopping rules, nothing that would train another model), and the
checkpoint loaded into the trainer."""

from pathlib import Path

from .checkpoints import CHECKPOINT
from .config import Config
from .data import cache as data_cache
from .data.prepare import data_path
from .errors import ArtifactError, ConfigError, DataError
from .train import Trainer


def comparable_config(config: Config, base_dir: Path) -> dict:
    """The config as a flat {dotted key: value} with absolute data paths, to compare runs."""
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        else:
            flat[prefix] = value

    walk("", config.to_dict())
    for key in ("data.train", "data.test", "data.validation"):
        if isinstance(flat.get(key), str):
            flat[key] = str(data_path(base_dir, flat[key]).resolve())
    return flat


_RESUMABLE_CHANGES = (
    "train.epochs",
    "train.early_stopping",
    "train.tolerance",
    "train.device",
    "data.store",  # the same batches from memory or from the store
    "tune.",
)  # fit reads no tune:


def refuse_changed_config(stored: dict, current: dict, run_dir: Path):
    keys = sorted(set(stored) | set(current))
    differing = [key for key in keys if not key.startswith(_RESUMABLE_CHANGES) and stored.get(key) != current.get(key)]
    if differing:
        details = "; ".join(f"{key}: {stored.get(key)!r} -> {current.get(key)!r}" for key in differing)
        raise ConfigError(
            f"cannot resume {run_dir}: the config differs from the checkpoint in {details}. "
            "Only train.epochs, train.early_stopping and train.tolerance may change; "
            "train into a new --out instead"
        )


def data_files(config: Config, base_dir: Path) -> dict:
    """The files training reads, by config key: the training CSV, and the validation CSV if one is given."""
    files = {"data.train": data_path(base_dir, config.data.train)}
    if isinstance(config.data.validation, str):
        files["data.validation"] = data_path(base_dir, config.data.validation)
    return files


def data_hashes(files: dict) -> dict:
    """SHA-256 of each training input (regular files only), so a resume can tell that the data changed."""
    return {key: data_cache.file_sha256(path) for key, path in files.items() if path.is_file()}


def refuse_changed_data(meta: dict, hashes: dict, files: dict, run_dir: Path):
    for key, digest in (meta.get("data_sha256") or {}).items():
        if hashes.get(key) != digest:
            raise DataError(
                f"{files.get(key, key)}: {key} changed since the checkpoint in {run_dir} was written; "
                "resuming on other data would not continue the same training. Train into a new --out "
                "instead"
            )


def restore_checkpoint(trainer: Trainer, checkpoint, run_dir: Path):
    """Load a checkpoint into the trainer; arrays that do not fit this model are an ArtifactError."""
    meta, arrays = checkpoint
    expected = {f"param/{key}" for key in trainer.model.params}
    expected |= {f"optimizer/{key}" for key in trainer.optimizer.state()["arrays"]}
    given = {key for key in arrays if not key.startswith("best/")} - {"history"}
    best = {key[len("best/") :] for key in arrays if key.startswith("best/")}
    problem = None
    if given != expected:
        problem = f"arrays missing {sorted(expected - given)[:3]}, unexpected {sorted(given - expected)[:3]}"
    elif best and (
        best != set(trainer.model.params)
        or any(arrays[f"best/{key}"].shape != value.shape for key, value in trainer.model.params.items())
    ):
        problem = "the best epoch's parameters do not match the model"
    if problem is None:
        try:
            trainer.load_state(meta, arrays)
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as error:
            problem = str(error) or type(error).__name__
    if problem is not None:
        raise ArtifactError(
            f"{Path(run_dir) / CHECKPOINT}: the checkpoint does not fit this model ({problem}); "
            "train again without --resume"
        )
