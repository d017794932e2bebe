"""What the commands share: a trained run loaded back from its folder, and the checks of the
CSV options and environment variables every command reads. Nothing here prints."""

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ..artifacts import read_run
from ..build import build_model
from ..config import DELIMITER_ALIASES, Config, ConfigSource
from ..data import DataSchema
from ..data.csv import DELIMITERS
from ..engine.losses import make_loss
from ..engine.model import Sequential
from ..errors import ArtifactError, ConfigError
from ..files import decodes_as, text_codec


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
