"""The run folder: committed as one unit, locked while a fit writes it, loaded safely.

Files: ``model.npz`` (weights only, loaded with ``allow_pickle=False``), ``model.json``
(manifest: versions, resolved config, data schema, metrics, SHA-256 of ``model.npz``),
``config.yaml`` (the resolved config), ``history.csv`` (one row per epoch) and
``checkpoint.npz`` (the training state, for ``--resume``).

A run is committed as one unit: the new files are written and fsynced in a staging folder
beside the run folder, which then trades places with the run folder in one
``renameat2(RENAME_EXCHANGE)`` (``system.exchange``). At every instant the path holds the
complete old run or the complete new one, and a reader that opens the folder once
(``read_run``) never mixes them. Where the system has no such exchange (Windows, some file
systems), the old run is moved aside and the new one in: two renames, with an instant between
them when the path holds neither.
While training, only ``checkpoint.npz`` changes, itself replaced atomically.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shlex
import shutil
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__, files, signals, system
from .errors import ArtifactError, DltrainError
from .files import (
    MANIFEST_LIMIT,
    UMASK,
    atomic_write,
    check_npz,
    disk_error,
    fsync_folder,
    read_regular,
)
from .system import available_memory

FORMAT_VERSION = 1
# Checkpoints change more often than run folders: 3 keys the optimizer state by parameter
# name (m/dense_0.W) and stores Adam's m and v as they are (2 kept decayed sums per half).
# A run folder's model.npz from before layer names (0.W, 2.W) still loads.
CHECKPOINT_FORMAT_VERSION = 3
RUN_FILES = ("model.npz", "model.json", "config.yaml", "history.csv")
CHECKPOINT = "checkpoint.npz"
# The checkpoint of a --force replacement, kept apart until the new run is committed.
PENDING_CHECKPOINT = ".checkpoint-pending.npz"
LOCK = ".lock"
# Files made from a run by other commands (plot, export): they belong to the run folder.
DERIVED_FILES = ("curves.png", "curves.svg", "curves.pdf", "model.onnx")


def npz_bytes(arrays: dict) -> bytes:
    """An .npz archive with a fixed timestamp, so equal arrays give equal bytes (and checksums)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(arrays[name]), allow_pickle=False)
    return buffer.getvalue()


def history_csv(history: list) -> str:
    columns: list[str] = []
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


# ---------------------------------------------------------------------- the lock


class RunLock:
    """The one lock protocol of every output folder (run or study): an advisory ``flock`` on its
    ``.lock`` file, held while a dltrain command writes the folder (where the system has no
    ``flock``, none: ``system.lock`` warns once).

    ``fit`` and ``export`` hold it exclusively; ``tune`` holds it shared, so that several
    ``tune`` commands can work on one study together while a ``fit`` or an ``export`` into the
    folder is refused (and they refuse it while it is held). The kernel drops the lock when its
    holder dies, so a lock left by a killed process is taken over at once; the file only names
    the last holder (process id and command) for the message."""

    def __init__(self, directory, command: str = "fit", shared: bool = False):
        self.directory = Path(directory)
        self.command, self.shared = command, shared
        self._held: dict[Path, int] = {}  # path of a lock file -> its descriptor
        self.commits = 0  # runs committed under this lock (a signal may arrive just after one)

    def _busy(self, descriptor: int) -> ArtifactError:
        words = os.read(descriptor, 64).decode("ascii", "replace").split()
        holder = words[0] if words else "unknown"
        command = words[1] if len(words) > 1 else "command"
        return ArtifactError(
            f"{self.directory}: in use by another dltrain {command} (process {holder}); "
            "wait for it to finish, or choose another --out"
        )

    def acquire(self):
        path = self.directory / LOCK
        if not system.CAN_LOCK:  # no file open in the folder either: Windows could not rename it
            system.warn_unlocked()
            self._clear_stale()
            return self
        try:
            while True:
                descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~UMASK)
                try:
                    system.lock(descriptor, shared=self.shared)
                except BlockingIOError:
                    error = self._busy(descriptor)
                    os.close(descriptor)
                    raise error from None
                # The file may have been replaced (a commit) or removed between open and flock.
                try:
                    current = os.stat(path).st_ino
                except FileNotFoundError:
                    current = None
                if current == os.fstat(descriptor).st_ino:
                    break
                os.close(descriptor)
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()} {self.command}\n".encode("ascii"))
        except OSError as error:
            raise disk_error(error, path) from None
        self._held[path] = descriptor
        self._clear_stale()
        return self

    def _clear_stale(self):
        if not self.shared:  # the sole holder: whatever a killed writer left is stale
            _remove_stale_staging(self.directory)
            (self.directory / PENDING_CHECKPOINT).unlink(missing_ok=True)

    def adopt(self, folder: Path):
        """Hold the lock file of a staging folder too: after the exchange it is the run folder's."""
        if not system.CAN_LOCK:
            return
        path = Path(folder) / LOCK
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666 & ~UMASK)
        system.lock(descriptor)
        os.write(descriptor, f"{os.getpid()} {self.command}\n".encode("ascii"))
        self._held[path] = descriptor

    def release(self):
        path = self.directory / LOCK
        for descriptor in self._held.values():
            with contextlib.suppress(OSError):
                if self.shared:  # the file goes only with its last holder
                    system.lock(descriptor)
                if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
                    os.unlink(path)  # while still holding it: a waiter then sees another inode and retries
            os.close(descriptor)
        self._held.clear()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


# ---------------------------------------------------------------------- committing a run


def _staging_prefix(directory: Path) -> str:
    return f".{directory.name}.staging-"


_ASIDE = "previous-"  # the old run, moved aside by a commit without an atomic exchange


def _remove_stale_staging(directory: Path):
    """Staging folders left by a killed commit (only the lock holder commits, so all are stale),
    except an old run moved aside while the run folder holds none (the commit was killed between
    its two moves: the old run is all there is)."""
    with contextlib.suppress(OSError):
        for entry in directory.parent.iterdir():
            if entry.name.startswith(_staging_prefix(directory) + _ASIDE) and not holds_run(directory):
                continue
            if entry.name.startswith(_staging_prefix(directory)):
                shutil.rmtree(entry, ignore_errors=True)


def _move_in(staging: Path, directory: Path):
    """Where the system cannot exchange two folders: the old run moved aside, the new one in, and
    the old one to the staging path (removed after the commit). A move that fails puts the old
    run back; a process killed between the moves leaves it in the ``previous-`` folder, kept."""
    aside = directory.parent / f"{_staging_prefix(directory)}{_ASIDE}{os.getpid()}"
    os.rename(directory, aside)
    try:
        os.rename(staging, directory)
    except OSError:
        os.rename(aside, directory)
        raise
    os.rename(aside, staging)


def _write_new(path: Path, payload: bytes):
    with open(path, "xb") as handle:
        files.write_all(handle, payload)  # one place for every byte (fault tests patch it)
        handle.flush()
        os.fsync(handle.fileno())


def commit_run(directory, files: dict, lock: RunLock, carry: dict | None = None):
    """Make ``directory`` hold exactly ``files`` ({name: bytes}) plus ``carry`` ({name: existing
    path}, hard-linked), all at once: written and fsynced in a staging folder, then exchanged.

    On any failure, or a signal before the exchange, ``directory`` is left exactly as it was."""
    directory = Path(directory)
    staging = directory.parent / f"{_staging_prefix(directory)}{os.getpid()}"
    with signals.deferred():
        current = staging
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            for name, payload in files.items():
                current = directory / name
                _write_new(staging / name, payload)
            for name, source in (carry or {}).items():
                current = directory / name
                try:
                    os.link(source, staging / name)
                except OSError:
                    shutil.copyfile(source, staging / name)
            current = staging
            lock.adopt(staging)
            fsync_folder(staging)
            current = directory
            if not system.exchange(staging, directory):
                _move_in(staging, directory)
            fsync_folder(directory.parent)
            lock.commits += 1
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise disk_error(error, current) from None
    shutil.rmtree(staging, ignore_errors=True)  # the old run, now at the staging path


def save_run(
    directory, arrays: dict, manifest: dict, config_yaml: str, history: list, lock: RunLock, carry: dict | None = None
) -> dict:
    """Commit the run folder's four files (and ``carry``) as one unit; returns the manifest as written."""
    weights = npz_bytes(arrays)
    manifest = {
        "format_version": FORMAT_VERSION,
        "dltrain_version": __version__,
        "numpy_version": np.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **manifest,
        "model_sha256": hashlib.sha256(weights).hexdigest(),
    }
    files = {
        "model.npz": weights,
        "config.yaml": config_yaml.encode("utf-8"),
        "history.csv": history_csv(history).encode("utf-8"),
        "model.json": (json.dumps(manifest, indent=2, allow_nan=True) + "\n").encode("utf-8"),
    }
    commit_run(directory, files, lock, carry)
    return manifest


# ---------------------------------------------------------------------- checkpoints


def save_checkpoint(path, meta: dict, arrays: dict, durable: bool = True):
    """One file holding the training state: arrays, plus the metadata as a JSON text array."""
    payload = dict(arrays)
    payload["meta.json"] = np.array(json.dumps(meta, allow_nan=True))
    with signals.deferred():
        atomic_write(path, npz_bytes(payload), durable)


def _load_checkpoint(path: Path, only_meta: bool = False):
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
        raise ArtifactError(f"{path}: the checkpoint is damaged ({error}); train again without --resume") from None
    if not isinstance(meta, dict) or meta.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise ArtifactError(
            f"{path}: checkpoint format {version!r} is not supported by "
            f"dltrain {__version__}; train again without --resume"
        )
    return meta, arrays


def read_checkpoint(directory):
    """(metadata, arrays) of a run folder's checkpoint; ArtifactError when absent or damaged."""
    path = Path(directory) / CHECKPOINT
    if not path.exists():
        raise ArtifactError(f"{path}: no checkpoint to resume from; train without --resume first")
    meta, arrays = _load_checkpoint(path)
    problem = _checkpoint_problem(meta, arrays)
    if problem:
        raise ArtifactError(f"{path}: the checkpoint is inconsistent ({problem}); train again without --resume")
    return meta, arrays


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _checkpoint_problem(meta: dict, arrays: dict) -> str | None:
    """What does not fit together in a checkpoint that unpacked fine, or None."""
    kinds = {
        "epoch": _is_count,
        "optimizer_steps": _is_count,
        "stop_reason": lambda v: isinstance(v, str),
        "history_columns": lambda v: isinstance(v, list) and all(isinstance(name, str) for name in v),
        "shuffle_rng": lambda v: isinstance(v, dict),
        "dropout_rng": lambda v: v is None or isinstance(v, dict),
        "schedule": lambda v: v is None or isinstance(v, dict),
        "config": lambda v: isinstance(v, dict),
        "best": lambda v: (
            isinstance(v, dict)
            and _is_count(v.get("epoch"))
            and _is_count(v.get("wait"))
            and (
                v.get("value") is None
                or isinstance(v.get("value"), (int, float))
                and not isinstance(v.get("value"), bool)
            )
        ),
    }
    for key, fits in kinds.items():
        if key not in meta:
            return f"{key!r} is missing"
        if not fits(meta[key]):
            return f"{key!r} has the wrong type or value ({str(meta[key])[:60]})"
    history = arrays.get("history")
    if history is None or history.ndim != 2 or history.shape != (meta["epoch"], len(meta["history_columns"])):
        shape = None if history is None else history.shape
        return (
            f"the history has shape {shape}, but {meta['epoch']} epochs of "
            f"{len(meta['history_columns'])} columns were recorded"
        )
    if meta["best"]["epoch"] > meta["epoch"]:
        return f"the best epoch {meta['best']['epoch']} comes after the last epoch {meta['epoch']}"
    for key, values in arrays.items():
        if values.dtype.kind != "f":
            return f"array {key!r} holds {values.dtype} values, not numbers"
        if key.startswith(("param/", "best/")) and not np.all(np.isfinite(values)):
            return f"array {key!r} holds NaN or infinite values"
    return None


def unfinished_message(directory: Path) -> str | None:
    """For a folder holding only a checkpoint: what it is and the exact command that continues it."""
    path = Path(directory) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        meta, _ = _load_checkpoint(path, only_meta=True)
        resume = meta["resume"]
        command = resume_command(shown_path(resume["config"]), directory, resume["overrides"])
        epochs = f"epoch {meta['epoch']} of {resume['epochs']}"
    except (DltrainError, KeyError, TypeError):
        return (
            f"{directory} holds no finished model, only a training checkpoint; "
            "continue it with `dltrain fit CONFIG --out " + shlex.quote(str(directory)) + " --resume`"
        )
    return (
        f"{directory} holds no finished model, only a training checkpoint (after {epochs}): the fit "
        f"was stopped before it saved a model. Continue it with: {command}"
    )


# ---------------------------------------------------------------------- reading a run


def _parse_manifest(path: Path, payload: bytes) -> dict:
    try:
        manifest = json.loads(payload.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path}: not valid JSON ({error}); the file is damaged, train again") from None
    if not isinstance(manifest, dict) or "format_version" not in manifest:
        raise ArtifactError(f"{path}: not a dltrain model manifest")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: run format version {manifest['format_version']!r} is not supported by "
            f"dltrain {__version__} (format {FORMAT_VERSION}); use a matching dltrain version "
            "or train again"
        )
    for key in ("config", "data", "model_sha256"):
        if key not in manifest:
            raise ArtifactError(f"{path}: the manifest lacks {key!r}; the file is damaged, train again")
    return manifest


def _parse_weights(path: Path, payload: bytes, expected_sha256) -> dict:
    digest = hashlib.sha256(payload).hexdigest()
    if digest != expected_sha256:
        raise ArtifactError(
            f"{path}: checksum mismatch (SHA-256 {digest[:12]}…, manifest says "
            f"{str(expected_sha256)[:12]}…); the weights were changed or damaged, train again"
        )
    try:
        check_npz(io.BytesIO(payload))
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise ArtifactError(f"{path}: cannot be read as weights ({error}); train again") from None
    for key, values in arrays.items():
        # A model with NaN weights predicts NaN for every row; refuse it rather than answer nonsense.
        if values.dtype.kind != "f" or not np.all(np.isfinite(values)):
            raise ArtifactError(
                f"{path}: parameter {key!r} holds "
                f"{'NaN or infinite values' if values.dtype.kind == 'f' else values.dtype}"
                "; the model cannot predict, train again"
            )
    return arrays


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


def read_manifest(directory) -> dict:
    """The manifest of a finished run (``model.json``), checked for format and required keys."""
    directory = Path(directory)
    payload = _read_files(directory, ["model.json"])["model.json"]
    return _parse_manifest(directory / "model.json", payload)


def read_run(directory) -> tuple[dict, dict]:
    """(manifest, weights) of a finished run, from one commit; the weights' SHA-256 is checked."""
    directory = Path(directory)
    payloads = _read_files(directory, ["model.json", "model.npz"])
    manifest = _parse_manifest(directory / "model.json", payloads["model.json"])
    return manifest, _parse_weights(directory / "model.npz", payloads["model.npz"], manifest["model_sha256"])


# ---------------------------------------------------------------------- choosing and claiming a folder


class RunTarget:
    """The folder a fit writes, locked for the fit's whole life.

    ``created``: this fit made it (and removes it again when nothing gets saved).
    ``replacing``: it holds a run that ``--force`` replaces; that run stays, untouched, until
    the new one is committed, and the new training's checkpoint is kept apart meanwhile."""

    def __init__(self, directory: Path, created: bool, replacing: bool):
        self.directory, self.created, self.replacing = Path(directory), created, replacing
        self.lock = RunLock(directory)

    @property
    def checkpoint(self) -> Path:
        return self.directory / (PENDING_CHECKPOINT if self.replacing else CHECKPOINT)

    def release(self):
        """Drop the lock. A replacement's checkpoint that was not committed goes (a committed
        one lives on as ``checkpoint.npz``); a folder this fit created and left without a run goes."""
        if self.replacing:
            self.checkpoint.unlink(missing_ok=True)
        if self.created and not holds_run(self.directory):
            shutil.rmtree(self.directory, ignore_errors=True)  # while locked: nobody else is inside
        self.lock.release()


def _refuse_foreign(directory: Path, inputs):
    for path in inputs:
        try:
            inside = Path(path).resolve().is_relative_to(directory.resolve())
        except (OSError, RuntimeError):  # a symlink loop: reading the file reports it
            continue
        if inside:
            raise ArtifactError(
                f"{path} is inside --out {directory}: saving the run would replace or remove it. "
                "Choose another --out, or move the file out of that folder"
            )
    foreign = foreign_entries(directory)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ArtifactError(
            f"{directory}: holds files that are not part of a dltrain run ({shown}); a run "
            "folder is replaced as a whole, so choose a new or empty --out"
        )


def claim_run_dir(name: str, out=None, force=False, resume=False, inputs=(), runs_root="runs") -> RunTarget:
    """Pick and lock the run folder: ``--out`` (checked), else a free ``runs/<name>[-k]``."""
    path = Path(runs_root if out is None else out)
    try:
        return _claim_numbered(name, path) if out is None else _claim_out(path, force, resume, inputs)
    except OSError as error:  # a name too long, a path through a file, ... met while looking
        raise disk_error(error, path) from None


def _claim_out(directory: Path, force: bool, resume: bool, inputs) -> RunTarget:
    if directory.exists() and not directory.is_dir():
        raise ArtifactError(f"{directory}: exists and is not a folder; choose another --out")
    if resume and not (directory / CHECKPOINT).is_file():
        raise ArtifactError(f"{directory / CHECKPOINT}: no checkpoint to resume from; train without --resume first")
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise disk_error(error, directory) from None
    target = RunTarget(directory, created, replacing=False)
    target.lock.acquire()
    try:
        _refuse_foreign(directory, inputs)
        if not resume and holds_run(directory):
            if not force:
                unfinished = None if (directory / "model.json").exists() else unfinished_message(directory)
                raise ArtifactError(
                    f"{unfinished}. Or pass --force to replace it"
                    if unfinished
                    else f"{directory}: already holds a run; pass --force to overwrite it (the old run "
                    "stays until the new one is saved), or choose another --out"
                )
            target.replacing = True
            target.checkpoint.unlink(missing_ok=True)
    except BaseException:
        target.release()
        raise
    return target


def numbered_folder(root: Path, name: str) -> Path:
    """A new folder ``root/<name>``, or ``<name>-2``, ``-3``… when taken (mkdir decides, so two
    processes never get the same one)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ArtifactError(f"{root}: exists and is not a folder; move it, or give --out")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise disk_error(error, root) from None
    suffix = 1
    while True:
        directory = root / (name if suffix == 1 else f"{name}-{suffix}")
        try:
            directory.mkdir()
            return directory
        except FileExistsError:
            suffix += 1
        except OSError as error:
            raise disk_error(error, directory) from None


def _claim_numbered(name: str, root: Path) -> RunTarget:
    target = RunTarget(numbered_folder(root, name), created=True, replacing=False)
    target.lock.acquire()
    return target
