"""checkpoint.npz: the training state a fit writes after every epoch (``artifacts.save_checkpoint``),
read back for ``fit --resume`` and to say how to continue an unfinished run.

The archive holds arrays (``param/…``, ``optimizer/…``, the best epoch's ``best/…``, the
``history``) and, as JSON text in ``meta.json``, the metadata: ``CheckpointMeta``, a stored
format (see ``stored``) checked together with the arrays."""

from __future__ import annotations

import io
import json
import os
import shlex
import zipfile
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
from pydantic import Field, ValidationInfo, model_validator

from . import __version__
from .errors import ArtifactError, DltrainError
from .files import check_npz, read_regular
from .stored import FieldProblem, Stored, damaged, foreign, unsupported
from .system import available_memory

CHECKPOINT = "checkpoint.npz"
# Checkpoints change more often than run folders: 3 keys the optimizer state by parameter
# name (m/dense_0.W) and stores Adam's m and v as they are (2 kept decayed sums per half), so
# an older checkpoint cannot be continued: its moments would be misread.
CHECKPOINT_FORMAT_VERSION = 3
RESUME_REMEDY = "train again without --resume"

Count = Annotated[int, Field(ge=0)]


class BestEpoch(Stored):
    """Early stopping's record: the best monitored value, its epoch, and the epochs since."""

    value: Optional[float]
    epoch: Count
    wait: Count


class ResumeCommand(Stored):
    """What continues the run: the config file, its --set overrides, and train.epochs."""

    config: str
    overrides: list[str]
    epochs: int


class CheckpointMeta(Stored):
    """The metadata of checkpoint.npz (fields in the order ``Trainer.state`` and the fit write them)."""

    REMEDY = RESUME_REMEDY

    epoch: Count
    history_columns: list[str]
    stop_reason: str
    optimizer_steps: Count
    shuffle_rng: dict[str, Any]
    dropout_rng: Optional[dict[str, Any]]
    schedule: Optional[dict[str, Any]]
    best: BestEpoch
    format_version: int
    config: dict[str, Any]  # the resolved config, flat ({dotted key: value}), to refuse a changed one
    config_sha256: str
    data_sha256: dict[str, str]  # of each training input, to refuse changed data
    resume: ResumeCommand

    @model_validator(mode="before")
    @classmethod
    def _version(cls, data):
        if not isinstance(data, dict):
            raise foreign("checkpoint")
        version = data.get("format_version")
        if type(version) is not int or version != CHECKPOINT_FORMAT_VERSION:
            raise unsupported("checkpoint", version, CHECKPOINT_FORMAT_VERSION, __version__)
        return data

    @model_validator(mode="after")
    def _fits_the_arrays(self, info: ValidationInfo):
        """The history and the best epoch agree with the epochs recorded; ``arrays`` (in the
        validation context, when read) hold finite numbers where parameters are."""
        arrays = (info.context or {}).get("arrays")
        if arrays is not None:
            history = arrays.get("history")
            expected = (self.epoch, len(self.history_columns))
            if history is None or history.shape != expected:
                shape = None if history is None else history.shape
                raise FieldProblem(
                    "history", f"has shape {shape}, but {expected[0]} epochs of {expected[1]} columns were recorded"
                )
        if self.best.epoch > self.epoch:
            raise FieldProblem(
                "best.epoch", f"the best epoch {self.best.epoch} comes after the last epoch {self.epoch}"
            )
        for key, values in (arrays or {}).items():
            if values.dtype.kind != "f":
                raise FieldProblem(key, f"holds {values.dtype} values, not numbers")
            if key.startswith(("param/", "best/")) and not np.all(np.isfinite(values)):
                raise FieldProblem(key, "holds NaN or infinite values")
        return self


def _load(path: Path, only_meta: bool = False) -> tuple[dict, dict]:
    payload = read_regular(
        path,
        ArtifactError,
        kind="checkpoint file",
        limit=available_memory(),
        not_found=f"{path}: no checkpoint to resume from; train without --resume first",
    )
    try:
        check_npz(io.BytesIO(payload))  # a forged .npy header must not make np.load allocate terabytes
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta.json"]))
            arrays = {} if only_meta else {key: archive[key] for key in archive.files if key != "meta.json"}
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError, json.JSONDecodeError) as error:
        raise damaged(path, f"cannot be read as a checkpoint ({error})", RESUME_REMEDY) from None
    context = None if only_meta else {"arrays": arrays}
    return CheckpointMeta.read(path, meta, context).to_dict(), arrays


def read_checkpoint(directory) -> tuple[dict, dict]:
    """(metadata, arrays) of a run folder's checkpoint, checked; ArtifactError when absent or damaged."""
    path = Path(directory) / CHECKPOINT
    if not path.exists():
        raise ArtifactError(f"{path}: no checkpoint to resume from; train without --resume first")
    return _load(path)


def checkpoint_json(meta: dict) -> str:
    """The metadata as ``meta.json`` stores it, checked: a checkpoint written is one that reads back."""
    return json.dumps(CheckpointMeta.from_dict(meta).to_dict(), allow_nan=True)


def resume_command(config, out, overrides=()) -> str:
    """The command that continues a run, as a shell reads it: config, --out, --resume and every --set."""
    argv = ["dltrain", "fit", str(config), "--out", str(out), "--resume"]
    for override in overrides:
        argv += ["--set", override]
    return shlex.join(argv)


def shown_path(path) -> str:
    """A stored absolute path as the user would type it from here: relative below the current folder."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def unfinished_message(directory: Path) -> str | None:
    """For a folder holding only a checkpoint: what it is and the exact command that continues it."""
    path = Path(directory) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        meta, _ = _load(path, only_meta=True)
        resume = meta["resume"]
        command = resume_command(shown_path(resume["config"]), directory, resume["overrides"])
        epochs = f"epoch {meta['epoch']} of {resume['epochs']}"
    except DltrainError:
        return (
            f"{directory} holds no finished model, only a training checkpoint; "
            "continue it with `dltrain fit CONFIG --out " + shlex.quote(str(directory)) + " --resume`"
        )
    return (
        f"{directory} holds no finished model, only a training checkpoint (after {epochs}): the fit "
        f"was stopped before it saved a model. Continue it with: {command}"
    )
