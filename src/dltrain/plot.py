"""Learning curves from a run folder's history.csv, drawn with matplotlib (optional extra)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from .errors import ArtifactError, DltrainError, install_hint
from .files import MANIFEST_LIMIT, check_writable, read_regular, write_output
from .run_folder import read_manifest


def read_history(run_dir) -> list[dict]:
    path = Path(run_dir) / "history.csv"
    payload = read_regular(
        path,
        ArtifactError,
        kind="history file",
        limit=MANIFEST_LIMIT,
        not_found=f"{path}: missing; {run_dir} does not hold a finished run",
    )
    try:
        reader = csv.DictReader(io.StringIO(payload.decode("utf-8")))
        rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as error:
        raise ArtifactError(f"{path}: cannot be read as a history ({error}); the file is damaged") from None
    if not rows:
        raise ArtifactError(f"{path}: has no epochs to plot")
    if "epoch" not in (reader.fieldnames or []):
        raise ArtifactError(f"{path}: has no epoch column; the file is damaged, train again")
    history = []
    for line, row in enumerate(rows, start=2):
        record = {}
        for key, value in row.items():
            if key is None or value is None:
                raise ArtifactError(
                    f"{path}:{line}: the row has more or fewer fields than the header; the file is damaged, train again"
                )
            if value == "":
                continue
            try:
                record[key] = float(value)
            except ValueError:
                raise ArtifactError(
                    f"{path}:{line}: column {key!r} has {value!r}, which is not a number; "
                    "the file is damaged, train again"
                ) from None
        if "epoch" not in record:
            raise ArtifactError(f"{path}:{line}: the epoch is empty; the file is damaged, train again")
        history.append(record)
    return history


# The file's suffix picks its format; anything else would write an image its name misdescribes.
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


def _pyplot(out: Path):
    """(matplotlib.pyplot, the image format ``out``'s suffix names), or one message for what is missing."""
    image_format = FORMATS.get(out.suffix.lower())
    if image_format is None:
        raise DltrainError(
            f"{out}: cannot tell the image format from {out.suffix or 'a name without a suffix'!r}; "
            "end --out with .png, .svg or .pdf"
        )
    check_writable(out, make_parents=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DltrainError(f"plotting needs matplotlib: {install_hint('plot')}") from None
    return plt, image_format


def _save(plt, figure, out: Path, image_format: str) -> Path:
    """Lay the figure out and write it whole (atomically) in the format ``out`` names."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, dpi=100)
    plt.close(figure)
    write_output(out, buffer.getvalue())
    return out


def plot_curves(run_dir, out=None) -> Path:
    """Write a PNG (or SVG or PDF, by ``out``'s suffix) of loss and every logged metric per epoch,
    train beside validation, best epoch marked."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "curves.png"
    plt, image_format = _pyplot(out)
    manifest = read_manifest(run_dir)
    history = read_history(run_dir)
    best_epoch = manifest.training.best_epoch
    names = [key for key in history[0] if key not in ("epoch", "lr", "seconds") and not key.startswith("val_")]
    epochs = [row["epoch"] for row in history]
    figure, axes = plt.subplots(len(names), 1, figsize=(7, 2.8 * len(names)), sharex=True, squeeze=False)
    for axis, name in zip(axes[:, 0], names):
        axis.plot(epochs, [row.get(name, math.nan) for row in history], label=f"train {name}")
        if f"val_{name}" in history[0]:
            axis.plot(epochs, [row.get(f"val_{name}", math.nan) for row in history], label=f"validation {name}")
        if best_epoch:
            axis.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
        axis.legend(loc="best", fontsize="small")
    axes[-1, 0].set_xlabel("epoch")
    figure.suptitle(f"{manifest.config.name}: learning curves")
    return _save(plt, figure, out, image_format)


def is_study_folder(path) -> bool:
    path = Path(path)
    return (path / "trials.csv").exists() and (path / "study.json").exists()


STUDY_FILE_LIMIT = 64 * (1 << 20)  # trials.csv of ~100,000 trials; study.json is a few lines


def _study_text(path: Path) -> str:
    payload = read_regular(path, ArtifactError, kind="study file", limit=STUDY_FILE_LIMIT)
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ArtifactError(
            f"{path}: not UTF-8 text (byte {error.start}); the file is damaged, run dltrain tune again "
            "with the same --out to write it anew"
        ) from None


def _number(path: Path, line: int, column: str, cell: str, kind=float):
    try:
        value = kind(cell)
    except (TypeError, ValueError):
        value = None
    if value is None or (kind is float and not math.isfinite(value)):
        raise ArtifactError(
            f"{path}: line {line}: {column} {cell!r} is not a number; the file is damaged, run dltrain tune "
            "again with the same --out to write it anew"
        )
    return value


def read_study(study_dir) -> tuple[dict, list, list]:
    """study.json and the finished trials of trials.csv, checked: (description, rows, parameter names).

    Each row holds ``number`` (int), ``value`` (float), ``state`` and the parameters' cells."""
    study_dir = Path(study_dir)
    meta_path, trials_path = study_dir / "study.json", study_dir / "trials.csv"
    try:
        meta = json.loads(_study_text(meta_path))
    except json.JSONDecodeError as error:
        raise ArtifactError(f"{meta_path}: not JSON ({error.msg}, line {error.lineno}); the file is damaged") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{meta_path}: not a study description (a JSON object); the file is damaged")
    try:
        table = list(csv.reader(io.StringIO(_study_text(trials_path))))
    except csv.Error as error:
        raise ArtifactError(f"{trials_path}: cannot be read as CSV ({error}); the file is damaged") from None
    header = table[0] if table else []
    if not {"number", "state", "value"} <= set(header):
        raise ArtifactError(f"{trials_path}: no number, state and value columns; the file is damaged")
    rows = []
    for line, cells in enumerate(table[1:], start=2):
        row = dict(zip(header, cells))
        if row.get("state") not in ("complete", "pruned") or not row.get("value"):
            continue
        row["number"] = _number(trials_path, line, "number", row.get("number"), int)
        row["value"] = _number(trials_path, line, "value", row["value"])
        rows.append(row)
    if not rows:
        raise ArtifactError(f"{trials_path}: no finished trial to plot yet")
    described = meta.get("parameters")
    if isinstance(described, dict) and all(isinstance(name, str) for name in described):
        params = [name for name in described if name in header]
    else:  # a study.json written before it described its parameters
        params = [key for key in header if key not in _NOT_PARAMETERS and not key.startswith("fold_")]
    return meta, rows, params


# trials.csv's columns that are not drawn parameters (fold_1 … fold_K too, under tune.cv).
_NOT_PARAMETERS = ("number", "state", "value", "spread", "network", "epochs", "seconds")


def _history(axis, rows: list, maximize: bool):
    for state, marker in (("complete", "o"), ("pruned", "x")):
        chosen = [row for row in rows if row["state"] == state]
        axis.scatter(
            [row["number"] for row in chosen], [row["value"] for row in chosen], marker=marker, label=state, alpha=0.7
        )
    best, best_line = None, []
    for row in sorted((row for row in rows if row["state"] == "complete"), key=lambda row: row["number"]):
        value = row["value"]
        best = value if best is None or (value > best if maximize else value < best) else best
        best_line.append((row["number"], best))
    if best_line:
        axis.step(*zip(*best_line), where="post", color="black", label="best so far")
    axis.set_xlabel("trial")
    axis.legend(loc="best", fontsize="small")
    axis.grid(alpha=0.3)


def _readable(cell: str) -> str:
    """A choice as people write it: a whole architecture stored as JSON becomes "128 relu, 64 relu"."""
    if cell.startswith("["):
        from .config import describe_layers

        try:
            return describe_layers(json.loads(cell)) or cell
        except ValueError:
            return cell
    return cell


def _slice(axis, rows: list, name: str, described: dict | None):
    """The metric against one parameter: a log axis for a range searched on a log scale; the
    choices in the config's order, each labelled as people write it."""
    cells = [str(row.get(name, "")) for row in rows]
    described = described if isinstance(described, dict) else {}
    labels = None
    if described.get("kind") == "choice" and isinstance(described.get("choices"), list):
        stored = [str(choice) for choice in described["choices"]]
        shown = described.get("labels")
        shown = shown if isinstance(shown, list) and len(shown) == len(stored) else [_readable(cell) for cell in stored]
        stored += sorted(set(cells) - set(stored))  # a choice the config no longer lists
        shown += [_readable(cell) for cell in stored[len(shown) :]]
        positions = [stored.index(cell) for cell in cells]
        labels = [str(label) for label in shown]
    else:
        try:
            positions = [float(cell) for cell in cells]
        except ValueError:
            stored = sorted(set(cells))
            positions = [stored.index(cell) for cell in cells]
            labels = [_readable(cell) for cell in stored]
    axis.scatter(
        positions, [row["value"] for row in rows], c=[row["number"] for row in rows], cmap="viridis", alpha=0.8
    )
    if labels is not None:
        axis.set_xticks(range(len(labels)))
        axis.set_xlim(-0.5, len(labels) - 0.5)  # room for the first and last labels
        axis.set_xticklabels([label if len(label) <= 32 else label[:31] + "…" for label in labels], fontsize="small")
    elif described.get("log") is True and all(position > 0 for position in positions):
        axis.set_xscale("log")
    axis.set_xlabel(name + (" (log scale)" if axis.get_xscale() == "log" else ""))
    axis.grid(alpha=0.3)


def plot_study(study_dir, out=None) -> Path:
    """Write the optimisation history (each trial's value and the best so far) and one slice per
    parameter (value against the parameter) from a study folder's trials.csv."""
    study_dir = Path(study_dir)
    out = Path(out) if out is not None else study_dir / "study.png"
    study = read_study(study_dir)
    plt, image_format = _pyplot(out)
    return _save(plt, study_figure(plt, study_dir, study), out, image_format)


def study_figure(plt, study_dir, study=None):
    """The figure ``plot_study`` writes for a study folder (``study``: what ``read_study`` read from it)."""
    study_dir = Path(study_dir)
    meta, rows, params = study or read_study(study_dir)
    described = meta.get("parameters") if isinstance(meta.get("parameters"), dict) else {}
    metric = str(meta.get("metric", "value"))
    if meta.get("cv"):
        metric += f" (mean of {meta['cv']} folds)"
    figure, axes = plt.subplots(1 + len(params), 1, figsize=(7, 2.8 * (1 + len(params))), squeeze=False)
    _history(axes[0, 0], rows, meta.get("direction") == "maximize")
    axes[0, 0].set_ylabel(metric)
    axes[0, 0].set_title(f"study {meta.get('study', study_dir.name)}: optimisation history")
    for axis, name in zip(axes[1:, 0], params):
        _slice(axis, rows, name, described.get(name))
        axis.set_ylabel(metric)
    return figure
