"""The command: a run folder exported to one ONNX file, verified against ``dltrain predict``
before it is written, under the run's lock when it goes into a run folder."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from ...api import load
from ...artifacts import CHECKPOINT, LOCK, PENDING_CHECKPOINT, RUN_FILES, RunLock, holds_run
from ...errors import ArtifactError, DltrainError
from ...files import check_writable, write_output
from .graph import onnx_modules
from .model import build_model
from .self_check import verify

FORMATS = ("onnx",)


@dataclass
class ExportResult:
    path: Path
    opset: int
    input_form: str
    inputs: list
    outputs: list
    verified_rows: int
    model_bytes: int


def export_run(
    run_dir, out=None, format: str = "onnx", opset: int | None = None, force: bool = False, input_form: str = "columns"
) -> ExportResult:
    """Export a run folder as one ONNX file, verified against ``dltrain predict`` before it is written."""
    run_dir = Path(run_dir)
    if format not in FORMATS:
        raise DltrainError(f"--format {format}: not supported; choose {', '.join(FORMATS)}")
    onnx_modules()
    out = Path(out) if out is not None else run_dir / "model.onnx"
    # Into a run folder: under fit's lock, so that a fit cannot swap the run away meanwhile.
    with RunLock(out.parent, command="export") if holds_run(out.parent) else contextlib.nullcontext():
        return _export_run(run_dir, out, opset, force, input_form)


def _export_run(run_dir: Path, out: Path, opset: int | None, force: bool, input_form: str) -> ExportResult:
    run = load(run_dir, device="cpu")  # the graph's weights are NumPy arrays, whatever device trained it
    check_writable(out, make_parents=True)
    if out.name in RUN_FILES + (CHECKPOINT, PENDING_CHECKPOINT, LOCK) and holds_run(out.parent):
        raise ArtifactError(
            f"--out {out} is a file of the run folder {out.parent}; writing there would break "
            "the run. Give another file name, such as model.onnx"
        )
    if out.exists() and not force:
        raise ArtifactError(f"{out}: already exists; pass --force to overwrite it, or choose another --out")
    model = build_model(run, input_form, opset)
    payload = model.SerializeToString()
    verified = verify(run, payload, input_form)
    write_output(out, payload)
    return ExportResult(
        out,
        model.opset_import[0].version,
        input_form,
        [item.name for item in model.graph.input],
        [item.name for item in model.graph.output],
        verified,
        len(payload),
    )
