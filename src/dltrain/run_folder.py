"""A finished run folder, read safely: what the folder holds, model.json (``RunManifest``, a
stored format: see ``stored``) and model.npz, checked against the manifest's checksum, both read
from one commit (``read_run``). ``artifacts`` writes the folder."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shlex
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import numpy as np
from pydantic import Field, PrivateAttr, field_serializer, model_validator

from . import __version__, system
from .checkpoints import CHECKPOINT, unfinished_message
from .config import Config
from .data.schema import DataSchema
from .errors import ArtifactError
from .files import MANIFEST_LIMIT, check_npz, read_regular
from .stored import Stored, damaged, foreign, unsupported
from .system import available_memory

FORMAT_VERSION = 1
RUN_FILES = ("model.npz", "model.json", "config.yaml", "history.csv")
# The checkpoint of a --force replacement, kept apart until the new run is committed.
PENDING_CHECKPOINT = ".checkpoint-pending.npz"
LOCK = ".lock"
# Files made from a run by other commands (plot, export): they belong to the run folder.
DERIVED_FILES = ("curves.png", "curves.svg", "curves.pdf", "model.onnx")


# ---------------------------------------------------------------------- what a folder holds


def _ours(name: str) -> bool:
    """Hidden files dltrain itself leaves in a run folder: the lock, a pending checkpoint, temporaries."""
    return name in (LOCK, PENDING_CHECKPOINT) or (name.startswith(".") and name.endswith(".tmp"))


def holds_run(directory: Path) -> bool:
    return any((Path(directory) / name).exists() for name in ("model.json", "model.npz", CHECKPOINT))


def foreign_entries(directory: Path) -> list[str]:
    """Names in ``directory`` that are not part of a dltrain run (a user's config, data, notes)."""
    directory = Path(directory)
    entries = sorted(os.listdir(directory))
    run_like = any(name in entries for name in ("model.json", "model.npz", CHECKPOINT))
    allowed = set(RUN_FILES + (CHECKPOINT,) + DERIVED_FILES) if run_like else set()
    return [name for name in entries if not _ours(name) and not (name in allowed and (directory / name).is_file())]


# ---------------------------------------------------------------------- model.json

Count = Annotated[int, Field(ge=0)]


class TrainingRecord(Stored):
    """How the training ended: epochs done, why it stopped, the best epoch and what was monitored."""

    epochs_done: Count
    stop_reason: str
    best_epoch: Count = 0  # run folders from before early stopping recorded none
    monitor: str = "loss"


class RunStamp(Stored):
    """How the run was made: the command line, when it started and ended, and how long it took."""

    command: Optional[list[str]] = None
    started: str
    ended: str
    seconds: float


class DeviceRecord(Stored):
    """Where the run trained: the device, train.device as set (auto, cpu, cuda), and why."""

    name: str
    setting: str
    reason: str


class RunManifest(Stored):
    """model.json: versions, the resolved config, the data schema, metrics, and the weights' SHA-256.

    Every run folder of format 1 loads: ``_upgrade`` puts what older versions wrote in the words
    of this one. ``document`` is the file's content as stored (``Run.metadata``)."""

    format_version: int
    dltrain_version: str
    numpy_version: str
    created: str
    config: Config
    data: DataSchema
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: TrainingRecord
    gelu: Optional[Literal["exact"]] = None  # absent: the run folder's gelu was the tanh form
    device: Optional[DeviceRecord] = None  # absent before runs could train on a GPU
    run: Optional[RunStamp] = None  # absent before model.json recorded the command line
    model_sha256: str
    _document: dict = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data):
        if not isinstance(data, dict) or "format_version" not in data:
            raise foreign("model manifest")
        version = data["format_version"]
        if type(version) is not int or version != FORMAT_VERSION:
            raise unsupported("run", version, FORMAT_VERSION, __version__)
        config = data.get("config")
        if not isinstance(config, dict):
            return data
        config = copy.deepcopy(config)
        model = config.get("model")
        if data.get("gelu") != "exact" and isinstance(model, dict) and isinstance(model.get("layers"), list):
            for layer in model["layers"]:  # gelu meant the tanh form before it was exact
                if isinstance(layer, dict) and layer.get("activation") == "gelu":
                    layer["activation"] = "gelu_tanh"
        schema = data.get("data")
        if isinstance(schema, dict) and "target_scaler" not in schema and isinstance(config.get("data"), dict):
            config["data"].setdefault("target_scale", "none")  # saved before targets were scaled
        return {**data, "config": config}

    @field_serializer("config")
    def _config(self, config: Config) -> dict:
        return config.to_dict()

    @property
    def document(self) -> dict:
        return self._document

    @classmethod
    def new(cls, content: dict, weights: bytes) -> "RunManifest":
        """The manifest of a run being saved: ``content`` (config, data, metrics, training, gelu,
        run) with the versions, the time, and the SHA-256 of ``weights`` (model.npz's bytes)."""
        manifest = cls(
            format_version=FORMAT_VERSION,
            dltrain_version=__version__,
            numpy_version=np.__version__,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **content,
            model_sha256=hashlib.sha256(weights).hexdigest(),
        )
        manifest._document = manifest.to_dict()
        return manifest

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=True) + "\n"

    @classmethod
    def parse(cls, path: Path, payload: bytes) -> "RunManifest":
        """model.json's bytes, checked and upgraded; what does not fit is an ArtifactError."""
        try:
            document = json.loads(payload.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise damaged(path, f"not valid JSON ({error})") from None
        manifest = cls.read(path, document)
        manifest._document = document
        return manifest


def parse_weights(path: Path, payload: bytes, expected_sha256) -> dict:
    digest = hashlib.sha256(payload).hexdigest()
    if digest != expected_sha256:
        raise damaged(path, f"checksum mismatch (SHA-256 {digest[:12]}…, manifest says {str(expected_sha256)[:12]}…)")
    try:
        check_npz(io.BytesIO(payload))
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise damaged(path, f"cannot be read as weights ({error})") from None
    for key, values in arrays.items():
        # A model with NaN weights predicts NaN for every row; refuse it rather than answer nonsense.
        if values.dtype.kind != "f" or not np.all(np.isfinite(values)):
            holds = "NaN or infinite values" if values.dtype.kind == "f" else f"{values.dtype} values"
            raise damaged(path, f"parameter {key!r} holds {holds}; the model cannot predict")
    return arrays


# ---------------------------------------------------------------------- reading a run


def _open_folder(directory: Path) -> int:
    try:
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        raise ArtifactError(f"{directory}: run folder not found; give the folder that `dltrain fit` printed") from None
    except OSError as error:
        raise ArtifactError(f"{directory}: cannot open the run folder ({error.strerror})") from None


_RUN_FILE_KINDS = {"model.json": "model manifest", "model.npz": "weights file"}


def _read_at(folder: int | None, directory: Path, name: str) -> bytes:
    """A run file's bytes, opened relative to the folder's descriptor (by its path where there is
    none): a regular file of bounded size (a symlink to /dev/zero or a FIFO planted in a run
    folder is refused, not read forever)."""
    limit = available_memory() if name.endswith(".npz") else MANIFEST_LIMIT
    return read_regular(
        name if folder is not None else directory / name,
        ArtifactError,
        kind=_RUN_FILE_KINDS.get(name, "run file"),
        limit=limit,
        dir_fd=folder,
        shown=directory / name,
    )


# Files of a `dltrain tune` study folder (tune/study_folder.py): its model is the run in best/.
_STUDY_FILES = ("study.json", "trials.csv", "best.yaml", "journal.log")


def study_message(directory: Path) -> str | None:
    """For a study folder given where a run folder belongs: the run folder to give instead."""
    directory = Path(directory)
    if not any((directory / name).is_file() for name in _STUDY_FILES):
        return None
    best = directory / "best"
    if holds_run(best):
        return (
            f"{directory} is a study folder of dltrain tune, not a run folder; its best trial, trained, "
            f"is the run folder {best}: give that instead"
        )
    if (directory / "best.yaml").is_file():
        how = f"train its best trial with: dltrain fit {shlex.quote(str(directory / 'best.yaml'))}"
    else:
        how = "no trial has completed yet; continue the search with dltrain tune"
    return f"{directory} is a study folder of dltrain tune, not a run folder, and holds no trained best/ run; {how}"


def _missing(directory: Path, name: str) -> ArtifactError:
    if name == "model.json":
        unfinished = unfinished_message(directory) or study_message(directory)
        return ArtifactError(unfinished or f"{directory / name}: missing; {directory} does not hold a finished run")
    return ArtifactError(f"{directory / name}: missing; the run folder is incomplete, train again")


def _read_by_path(directory: Path, names) -> dict:
    """Where a folder cannot be opened (Windows): each file by its path. Two files may then come
    from two commits; the weights' checksum in the manifest tells, and the message says train again."""
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: run folder not found; give the folder that `dltrain fit` printed")
    payloads: dict[str, bytes] = {}
    for name in names:
        if not (directory / name).exists():
            raise _missing(directory, name)
        payloads[name] = _read_at(None, directory, name)
    return payloads


def _read_files(directory: Path, names) -> dict:
    """The named files of a run folder, all from the same committed run.

    They are read through one open descriptor on the folder; a commit that exchanges the
    folder meanwhile (and removes the old run) shows as a vanished file, and the read starts over."""
    if not system.OPEN_FOLDERS:
        return _read_by_path(directory, names)
    for _attempt in range(5):
        folder = _open_folder(directory)
        try:
            payloads: dict[str, bytes] = {}
            exchanged = False
            for name in names:
                try:
                    payloads[name] = _read_at(folder, directory, name)
                except FileNotFoundError:
                    if os.fstat(folder).st_ino == _inode(directory):
                        raise _missing(directory, name) from None
                    exchanged = True
                    break  # the folder was exchanged under us: read the new one
                except IsADirectoryError:
                    raise ArtifactError(f"{directory / name}: is a folder, not a file; train again") from None
                except OSError as error:
                    raise ArtifactError(f"{directory / name}: cannot be read ({error.strerror})") from None
            if not exchanged:
                return payloads
        finally:
            os.close(folder)
    raise ArtifactError(f"{directory}: changed while it was read (a fit is saving into it); try again")


def _inode(path: Path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def read_manifest(directory) -> RunManifest:
    """The manifest of a finished run (``model.json``), checked and upgraded."""
    directory = Path(directory)
    payload = _read_files(directory, ["model.json"])["model.json"]
    return RunManifest.parse(directory / "model.json", payload)


def read_run(directory) -> tuple[RunManifest, dict]:
    """(manifest, weights) of a finished run, from one commit; the weights' SHA-256 is checked."""
    directory = Path(directory)
    payloads = _read_files(directory, ["model.json", "model.npz"])
    manifest = RunManifest.parse(directory / "model.json", payloads["model.json"])
    return manifest, parse_weights(directory / "model.npz", payloads["model.npz"], manifest.model_sha256)
