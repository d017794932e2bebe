"""The run folder, written: committed as one unit, locked while a fit writes it, claimed.

Files: ``model.npz`` (weights only, loaded with ``allow_pickle=False``), ``model.json``
(manifest: versions, resolved config, data schema, metrics, SHA-256 of ``model.npz``),
``config.yaml`` (the resolved config), ``history.csv`` (one row per epoch) and
``checkpoint.npz`` (the training state, for ``--resume``). Reading a finished run is
``run_folder``'s job, reading a checkpoint ``checkpoints``'; their names are importable from here.

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
import io
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from . import files, signals, system
from .checkpoints import CHECKPOINT as CHECKPOINT
from .checkpoints import CHECKPOINT_FORMAT_VERSION as CHECKPOINT_FORMAT_VERSION
from .checkpoints import checkpoint_json, unfinished_message
from .checkpoints import read_checkpoint as read_checkpoint
from .checkpoints import resume_command as resume_command
from .checkpoints import shown_path as shown_path
from .errors import ArtifactError
from .files import UMASK, atomic_write, disk_error, fsync_folder
from .run_folder import DERIVED_FILES as DERIVED_FILES
from .run_folder import FORMAT_VERSION as FORMAT_VERSION
from .run_folder import LOCK, PENDING_CHECKPOINT, RunManifest, foreign_entries, holds_run
from .run_folder import RUN_FILES as RUN_FILES
from .run_folder import read_manifest as read_manifest
from .run_folder import read_run as read_run
from .run_folder import study_message as study_message


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
    """Commit the run folder's four files (and ``carry``) as one unit; ``manifest`` holds model.json's
    content (``RunManifest``: config, data, metrics, training, ...). Returns the manifest as written."""
    weights = npz_bytes(arrays)
    stored = RunManifest.new(manifest, weights)
    files = {
        "model.npz": weights,
        "config.yaml": config_yaml.encode("utf-8"),
        "history.csv": history_csv(history).encode("utf-8"),
        "model.json": stored.to_json().encode("utf-8"),
    }
    commit_run(directory, files, lock, carry)
    return stored.document


# ---------------------------------------------------------------------- checkpoints


def save_checkpoint(path, meta: dict, arrays: dict, durable: bool = True):
    """One file holding the training state: arrays, plus the metadata as a JSON text array."""
    payload = dict(arrays)
    payload["meta.json"] = np.array(checkpoint_json(meta))
    with signals.deferred():
        atomic_write(path, npz_bytes(payload), durable)


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
