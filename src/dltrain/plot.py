"""Learning curves from a run folder's history.csv, drawn with matplotlib (optional extra)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from .artifacts import atomic_write, read_manifest
from .errors import ArtifactError, DltrainError
from .files import MANIFEST_LIMIT, read_regular


def read_history(run_dir) -> list[dict]:
    path = Path(run_dir) / "history.csv"
    payload = read_regular(path, ArtifactError, kind="history file", limit=MANIFEST_LIMIT,
                           not_found=f"{path}: missing; {run_dir} does not hold a finished run")
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
                raise ArtifactError(f"{path}:{line}: the row has more or fewer fields than the header; "
                                    "the file is damaged, train again")
            if value == "":
                continue
            try:
                record[key] = float(value)
            except ValueError:
                raise ArtifactError(f"{path}:{line}: column {key!r} has {value!r}, which is not a number; "
                                    "the file is damaged, train again") from None
        if "epoch" not in record:
            raise ArtifactError(f"{path}:{line}: the epoch is empty; the file is damaged, train again")
        history.append(record)
    return history


# The file's suffix picks its format; anything else would write an image its name misdescribes.
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


def plot_curves(run_dir, out=None) -> Path:
    """Write a PNG (or SVG or PDF, by ``out``'s suffix) of loss and every logged metric per epoch,
    train beside validation, best epoch marked."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "curves.png"
    image_format = FORMATS.get(out.suffix.lower())
    if image_format is None:
        raise DltrainError(f"{out}: cannot tell the image format from {out.suffix or 'a name without a suffix'!r}; "
                           "end --out with .png, .svg or .pdf")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DltrainError("plotting needs matplotlib: pip install 'dltrain[plot]'") from None
    manifest = read_manifest(run_dir)
    history = read_history(run_dir)
    training = manifest.get("training")
    best_epoch = training.get("best_epoch") if isinstance(training, dict) else None
    best_epoch = best_epoch if isinstance(best_epoch, int) and not isinstance(best_epoch, bool) else 0
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
    name = manifest["config"].get("name") if isinstance(manifest["config"], dict) else None
    figure.suptitle(f"{name if isinstance(name, str) else run_dir.name}: learning curves")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, dpi=100)
    plt.close(figure)
    atomic_write(out, buffer.getvalue())
    return out
