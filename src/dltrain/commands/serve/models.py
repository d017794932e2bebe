"""The runs a server answers for: loaded once at start, named, described, warmed up.

A run is read into memory when the server starts and never again, so a run folder replaced on
disk while serving (a ``fit --force``) changes nothing until the server is restarted."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ... import __version__
from ...api import Run, load
from ...data import MISSING_TOKENS, DataSchema
from ...errors import DltrainError

# A model's name is a URL path segment: no slash, nothing that needs escaping.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class ServedModel:
    name: str
    run: Run
    metadata: dict


def load_models(arguments: list[str]) -> list[ServedModel]:
    """Each RUN (or NAME=RUN) loaded and checked; a damaged run is one message naming its file."""
    models: dict[str, ServedModel] = {}
    for argument in arguments:
        name, separator, folder = argument.partition("=")
        if not separator or Path(argument).exists():
            name, folder = Path(argument).resolve().name, argument
        if not _NAME.match(name):
            raise DltrainError(
                f"{argument}: {name!r} cannot name a model in a URL; serve it as NAME={folder} with a NAME of "
                "letters, digits, '.', '_' and '-'"
            )
        if name in models:
            raise DltrainError(
                f"two runs are named {name!r} ({models[name].run.run_dir} and {folder}); name one of them: "
                f"dltrain serve ... other-{name}={folder}"
            )
        if not Path(folder).is_dir():
            raise DltrainError(f"{folder}: no such run folder; give a folder written by dltrain fit")
        run = load(folder)
        models[name] = ServedModel(name, run, describe(name, run))
    return list(models.values())


def describe(name: str, run: Run) -> dict:
    """What a client needs to call the model: the task, targets, labels and each input column."""
    schema, manifest = run.schema, run.manifest
    columns = []
    for column in schema.columns:
        entry: dict = {"name": column.name, "kind": column.type, "missing": column.missing, "fill": column.fill}
        if column.type == "categorical":
            entry.update(categories=list(column.categories), unknown=column.unknown)
        elif column.type == "date":
            entry.update(format=column.format, parts=list(column.parts))
        extra_markers = sorted(set(schema.missing_tokens(column.name)) - MISSING_TOKENS)
        if extra_markers:
            entry["na_values"] = extra_markers  # cells that mean "missing" beyond null, "" and the usual tokens
        columns.append(entry)
    metadata = {
        "name": name,
        "task": schema.task,
        "targets": list(schema.targets),
        "outputs": [schema.targets[0], *(f"prob_{label}" for label in schema.class_labels)]
        if schema.task == "classification"
        else list(schema.targets),
        "inputs": columns,
        "model_sha256": manifest.get("model_sha256"),
        "trained_with": manifest.get("dltrain_version"),
        "trained_at": (manifest.get("run") or {}).get("ended") or manifest.get("created"),
        "dltrain_version": __version__,
    }
    if schema.task == "classification":
        metadata["class_labels"] = list(schema.class_labels)
    return metadata


def warm_up_features(schema: DataSchema, n_rows: int = 8) -> np.ndarray:
    """Model inputs of ordinary size (the scaled means), to run the network once before serving."""
    return np.zeros((n_rows, schema.n_inputs), dtype=np.float32)
