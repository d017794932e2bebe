"""The run folder: atomic writes, a manifest with checksums, and safe loading.

Files: ``model.npz`` (weights only, loaded with ``allow_pickle=False``), ``model.json``
(manifest: versions, resolved config, data schema, metrics, SHA-256 of ``model.npz``),
``config.yaml`` (the resolved config) and ``history.csv`` (one row per epoch).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import signal
import tempfile
import threading
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__
from .errors import ArtifactError

FORMAT_VERSION = 1
# Checkpoints change more often than run folders: 2 stores Adam's moments as decayed sums.
CHECKPOINT_FORMAT_VERSION = 2
RUN_FILES = ("model.npz", "model.json", "config.yaml", "history.csv")
CHECKPOINT = "checkpoint.npz"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def check_writable(path: Path):
    """A clear error, before any writing, when ``path`` cannot become a file."""
    if path.is_dir():
        raise ArtifactError(f"{path}: is a folder; give a file name to write to")
    if not path.parent.is_dir():
        raise ArtifactError(f"{path.parent}: folder not found; create it first or write elsewhere")


def atomic_write(path, data: bytes | str, durable: bool = True):
    """Write to a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A reader sees the old file or the new one, never a mix. ``durable=False`` skips the
    fsyncs: still safe against a crash of this process, not against losing power."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    check_writable(path)
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise ArtifactError(f"{path}: cannot write here ({error.strerror}); choose another place") from None
    try:
        os.fchmod(descriptor, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide runs from other users
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if not durable:
        return
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextlib.contextmanager
def atomic_file(path):
    """A binary handle for streaming a large file; like ``atomic_write``, it appears whole or not at all."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(descriptor, 0o666 & ~_UMASK)
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def npz_bytes(arrays: dict) -> bytes:
    """An .npz archive with a fixed timestamp, so equal arrays give equal bytes (and checksums)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(arrays[name]), allow_pickle=False)
    return buffer.getvalue()


@contextlib.contextmanager
def deferred_interrupts():
    """Hold Ctrl-C until the block is done, so a group of files is never left half-updated."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def history_csv(history: list) -> str:
    columns = []
    for record in history:
        columns.extend(key for key in record if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in history:
        writer.writerow({key: _format_number(value) for key, value in record.items()})
    return buffer.getvalue()


def _format_number(value):
    return repr(value) if isinstance(value, float) else value


def holds_run(directory: Path) -> bool:
    return any((directory / name).exists() for name in ("model.json", "model.npz", "checkpoint.npz"))


def choose_run_dir(name: str, out=None, force=False, runs_root="runs") -> Path:
    """``--out`` if given (refused when it holds a run, unless forced); else a free ``runs/<name>[-k]``."""
    if out is not None:
        directory = Path(out)
        if directory.exists() and not directory.is_dir():
            raise ArtifactError(f"{directory}: exists and is not a folder; choose another --out")
        if holds_run(directory) and not force:
            raise ArtifactError(f"{directory}: already holds a run; pass --force to overwrite it, "
                                "or choose another --out")
        directory.mkdir(parents=True, exist_ok=True)
        return directory
    root = Path(runs_root)
    root.mkdir(parents=True, exist_ok=True)
    suffix = 1
    while True:
        directory = root / (name if suffix == 1 else f"{name}-{suffix}")
        try:
            directory.mkdir()
            return directory
        except FileExistsError:
            suffix += 1


def save_run(directory, arrays: dict, manifest: dict, config_yaml: str, history: list) -> dict:
    """Write the run folder's four files atomically; returns the manifest as written."""
    directory = Path(directory)
    weights = npz_bytes(arrays)
    manifest = {
        "format_version": FORMAT_VERSION,
        "dltrain_version": __version__,
        "numpy_version": np.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **manifest,
        "model_sha256": hashlib.sha256(weights).hexdigest(),
    }
    with deferred_interrupts():
        atomic_write(directory / "model.npz", weights)
        atomic_write(directory / "config.yaml", config_yaml)
        atomic_write(directory / "history.csv", history_csv(history))
        atomic_write(directory / "model.json", json.dumps(manifest, indent=2, allow_nan=True) + "\n")
    return manifest


def save_checkpoint(directory, meta: dict, arrays: dict, durable: bool = True):
    """One file holding the training state: arrays, plus the metadata as a JSON text array."""
    payload = dict(arrays)
    payload["meta.json"] = np.array(json.dumps(meta, allow_nan=True))
    with deferred_interrupts():
        atomic_write(Path(directory) / CHECKPOINT, npz_bytes(payload), durable)


def read_checkpoint(directory):
    """(metadata, arrays) of a run folder's checkpoint; ArtifactError when absent or damaged."""
    path = Path(directory) / CHECKPOINT
    if not path.exists():
        raise ArtifactError(f"{path}: no checkpoint to resume from; train without --resume first")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        meta = json.loads(str(arrays.pop("meta.json")))
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path}: the checkpoint is damaged ({error}); train again without --resume") from None
    if meta.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise ArtifactError(f"{path}: checkpoint format {meta.get('format_version')!r} is not supported by "
                            f"dltrain {__version__}; train again without --resume")
    return meta, arrays


def read_manifest(directory) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: run folder not found; give the folder that `dltrain fit` printed")
    path = directory / "model.json"
    if not path.exists():
        raise ArtifactError(f"{path}: missing; {directory} does not hold a finished run")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path}: not valid JSON ({error}); the file is damaged, train again") from None
    if not isinstance(manifest, dict) or "format_version" not in manifest:
        raise ArtifactError(f"{path}: not a dltrain model manifest")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ArtifactError(f"{path}: run format version {manifest['format_version']!r} is not supported by "
                            f"dltrain {__version__} (format {FORMAT_VERSION}); use a matching dltrain version "
                            "or train again")
    for key in ("config", "data", "model_sha256"):
        if key not in manifest:
            raise ArtifactError(f"{path}: the manifest lacks {key!r}; the file is damaged, train again")
    return manifest


def read_weights(directory, expected_sha256: str) -> dict:
    """Load ``model.npz`` after checking its SHA-256 against the manifest; never unpickles."""
    path = Path(directory) / "model.npz"
    try:
        payload = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; the run folder is incomplete, train again") from None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != expected_sha256:
        raise ArtifactError(f"{path}: checksum mismatch (SHA-256 {digest[:12]}…, manifest says "
                            f"{str(expected_sha256)[:12]}…); the weights were changed or damaged, train again")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise ArtifactError(f"{path}: cannot be read as weights ({error}); train again") from None
