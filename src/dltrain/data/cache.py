"""A cache of parsed CSV columns, so the next fit on the same file skips the parsing; it is also
the on-disk store that training reads large files from (store.py holds the format).

One entry per CSV file and set of read options: a folder of plain arrays (``.npy``, loaded with
``allow_pickle=False``) and ``<name>-<key>.json`` beside it, the record of the CSV's SHA-256, the
options, and each array's type, shape and SHA-256. An entry is used only while all of them
match: arrays replaced or damaged behind an intact record are never trained on. Hashing the
CSV is skipped when the file's size, inode, modification and change times are exactly those
seen when it was last hashed, and that hash was taken well after the last modification (the
rule git uses for its index). Entries live in ``.dltrain-cache/`` beside the config, or in
``$DLTRAIN_CACHE_DIR``; ``data.cache: false`` keeps none (a store then lives in a temporary
folder there while the command runs). Files under ``MIN_BYTES`` are never cached: parsing them
costs less than loading an entry. A damaged or unreadable entry is ignored and replaced; a
cache that cannot be written is skipped, never an error, unless the store itself is needed.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import stat
import time
from pathlib import Path

import numpy as np

from ..errors import DltrainError, StorageError
from ..files import MANIFEST_LIMIT, atomic_write, disk_error, human_bytes, open_regular, read_regular
from ..system import process_running
from . import store
from .cells import MISSING_TOKENS
from .csv import CsvFile
from .parsed import Columns

CACHE_FORMAT = 3  # 3: the on-disk store, a folder of .npy files (2: one .npz, the arrays' SHA-256 in the record)
CACHE_ENV = "DLTRAIN_CACHE_DIR"
MIN_BYTES = 1 << 20
_RACY_SECONDS = 2.0  # a file modified this close to its hashing may change again within one mtime tick
_ARRAY_NAMES = ("matrix", "missing", "lines", "wide_", "codes_", "words_")
_TEMPORARY = ".incomplete-"  # a folder being written (or left by a killed process): never read


def cache_folder(base_dir: Path) -> Path:
    """Where entries for a config in ``base_dir`` go: $DLTRAIN_CACHE_DIR, else ``.dltrain-cache/``."""
    override = configured_folder()
    return override if override is not None else Path(base_dir) / ".dltrain-cache"


def configured_folder(environ=os.environ) -> Path | None:
    """$DLTRAIN_CACHE_DIR (None when unset or empty), checked: a path that is, or runs through,
    something other than a folder is a mistake to name, not a cache to skip in silence. (A
    folder that cannot be written is still only skipped.)"""
    value = environ.get(CACHE_ENV, "")
    if not value:
        return None
    folder = Path(value)
    for path in (folder, *folder.parents):  # the nearest part that exists must be a folder
        try:
            is_folder = stat.S_ISDIR(os.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            break  # unreadable, a link loop...: the cache is skipped when it cannot be written
        if not is_folder:
            what = "is" if path == folder else f"runs through {path}, which is"
            raise DltrainError(
                f"{CACHE_ENV}={value}: {what} not a folder; point it at a folder for the parsed-data "
                "cache, or unset it to keep the cache in .dltrain-cache/ beside each config"
            )
        break
    return folder


def file_sha256(path: Path) -> str:
    with open_regular(path, OSError) as handle:
        digest = hashlib.sha256()
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
        return digest.hexdigest()


def _fingerprint(path: Path) -> list:
    status = path.stat()
    return [status.st_size, status.st_ino, status.st_mtime_ns, status.st_ctime_ns]


def read_columns(table: CsvFile, request: dict, folder: Path | None, *, mapped: bool = False, keep: bool = True):
    """``table.read(**request)``, through the cache in ``folder`` (None: no cache).

    ``mapped``: the columns stay on disk, in the store (read a block at a time; the CSV is
    parsed straight into it), else they are in memory. ``keep``: the entry is kept for the next
    command (the cache); without it a store lives in a temporary folder until this process ends."""
    try:
        fingerprint = _fingerprint(table.path) if table.content is None else None
    except OSError:
        fingerprint = None
    if folder is None or fingerprint is None or (fingerprint[0] < MIN_BYTES and not mapped):
        return table.read(**request)
    entry = _entry(table, request, Path(folder))
    if keep:
        columns = _load(entry, table, fingerprint, mapped)
        if columns is not None:
            return columns
    digest = file_sha256(table.path) if keep else ""
    record = {"options": entry.options, "sha256": digest, "fingerprint": fingerprint, "hashed_at": time.time_ns()}
    if mapped:
        return _parse_into_store(table, request, entry, record, keep)
    columns = table.read(**request)
    if keep and _unchanged(table.path, fingerprint):  # a file rewritten while read is not cached under the old hash
        try:
            _commit(
                entry, record, lambda folder: store.write_columns(folder, columns, list(columns.categories)), columns
            )
        except (OSError, DltrainError):
            pass  # a read-only or full disk only costs the next fit a parse
    return columns


class _Entry:
    """Where an entry's record and arrays go, and the options it is for."""

    def __init__(self, folder: Path, name: str, options: dict):
        self.folder, self.name, self.options = folder, name, options
        self.record = folder / f"{name}.json"
        self.arrays = folder / name

    def temporary(self) -> Path:
        return self.folder / f"{_TEMPORARY}{os.getpid()}-{self.name}"


def _entry(table: CsvFile, request: dict, folder: Path) -> _Entry:
    options = {
        "format": CACHE_FORMAT,
        "delimiter": table.delimiter,
        "encoding": table.encoding,
        "decimal": table.decimal,
        "header": table.header,
        "missing_tokens": sorted(MISSING_TOKENS),
        "na_values": table.na_values_key(),
        "numeric": list(request.get("numeric", ())),
        "wide": list(request.get("wide", ())),
        "text": list(request.get("text", ())),
        "fixed": sorted(request.get("fixed", {})),
    }
    key = hashlib.sha256(
        json.dumps({"path": str(table.path.resolve()), **options}, sort_keys=True).encode("utf-8")
    ).hexdigest()[:20]
    stem = "".join(character if character.isalnum() or character in "._-" else "_" for character in table.path.stem)
    return _Entry(folder, f"{stem[:40]}-{key}", options)


def _unchanged(path: Path, fingerprint: list) -> bool:
    try:
        return _fingerprint(path) == fingerprint
    except OSError:
        return False


def _load(entry: _Entry, table: CsvFile, fingerprint: list, mapped: bool) -> Columns | None:
    try:
        record = json.loads(read_regular(entry.record, OSError, limit=MANIFEST_LIMIT).decode("utf-8"))
        if record.get("options") != entry.options:
            return None
        trusted = (
            record.get("fingerprint") == fingerprint
            and record.get("hashed_at", 0) - fingerprint[2] > _RACY_SECONDS * 1e9
        )
        if not trusted:
            if file_sha256(table.path) != record.get("sha256"):
                return None
            record.update(fingerprint=fingerprint, hashed_at=time.time_ns())
            atomic_write(entry.record, json.dumps(record, indent=1) + "\n")
        arrays = record["arrays"]
        if not all(isinstance(name, str) and name.startswith(_ARRAY_NAMES) for name in arrays):
            return None
        loaded = store.check_arrays(entry.arrays, arrays, mapped)
        columns = store.open_columns(table.path, loaded, record, bool(record["integral"]))
        return columns if columns.n_rows == record["rows"] and columns.n_rows else None
    except (OSError, DltrainError, ValueError, KeyError, TypeError, AttributeError, EOFError):
        return None  # a damaged, foreign or unwritable entry only costs a parse


def _commit(entry: _Entry, record: dict, write, columns: Columns) -> None:
    """Write an entry's arrays (``write(folder)`` gives their record) into a temporary folder, put
    it in place, then write its record: the record comes last, so an entry cut short has none."""
    _remove_abandoned(entry.folder)
    entry.record.unlink(missing_ok=True)  # never a record beside arrays being replaced
    temporary = entry.temporary()
    arrays = write(temporary)
    shutil.rmtree(entry.arrays, ignore_errors=True)
    os.replace(temporary, entry.arrays)
    record.update(
        arrays=arrays,
        rows=columns.n_rows,
        numeric=list(columns.numeric_names),
        wide=list(columns.wide),
        text=list(columns.categories),
        integral=columns.integral,
    )
    atomic_write(entry.record, json.dumps(record, indent=1) + "\n")


def _parse_into_store(table: CsvFile, request: dict, entry: _Entry, record: dict, keep: bool) -> Columns:
    """Parse the CSV straight into a store and map it: kept as the cache's entry (``keep``, and
    the file unchanged while it was read), else in a temporary folder removed at exit."""
    _remove_abandoned(entry.folder)
    folder = entry.temporary()
    long_lines = (record["fingerprint"] or [0])[0] >= 2**31

    def finished(sink: store.StoreSink, arrays: dict) -> Columns:
        names = {"numeric": sink.numeric, "wide": sink.wide, "text": sink.text}
        final = folder
        if keep and _unchanged(table.path, record["fingerprint"]):
            try:
                entry.record.unlink(missing_ok=True)
                shutil.rmtree(entry.arrays, ignore_errors=True)
                os.replace(folder, entry.arrays)
                final = entry.arrays
                record.update(arrays=arrays, rows=sink.written, integral=sink.integral, **names)
                atomic_write(entry.record, json.dumps(record, indent=1) + "\n")
            except OSError as error:
                raise disk_error(error, entry.folder) from None
        if final == folder:
            _remove_at_exit(folder)
        mapped = {name: _mapped(final / f"{name}.npy", name) for name in arrays}
        return store.open_columns(table.path, mapped, names, sink.integral)

    def sink(numeric, wide, text):
        return store.StoreSink(numeric, wide, text, folder, finished, long_lines, hashed=keep)

    try:
        return table.read(**request, sink=sink)
    except store.StoreFull as error:
        shutil.rmtree(folder, ignore_errors=True)
        size = human_bytes((record["fingerprint"] or [0])[0])
        what = f"the parsed data of {table.path} (up to about the CSV's {size})"
        raise full_disk(entry.folder, what, error) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def full_disk(folder: Path, what: str, error: store.StoreFull) -> StorageError:
    """One line for a disk with no room for the store: the folder, what it was writing, the ways round it."""
    return StorageError(
        f"{folder}: cannot write {what}: {error.reason}, or set {CACHE_ENV} to a folder on a disk with room, "
        "or set data.store: false to keep the data in memory"
    )


def scratch_folder(folder: Path, name: str) -> Path:
    """A folder in the cache ``folder`` for arrays this process alone uses (a fit's model inputs),
    removed when it ends (or, after a kill -9, by the next command's ``_remove_abandoned``)."""
    _remove_abandoned(folder)
    path = folder / f"{_TEMPORARY}{os.getpid()}-{name}-{os.urandom(4).hex()}"
    try:
        path.mkdir(parents=True)
    except OSError as error:
        raise disk_error(error, path) from None
    _remove_at_exit(path)
    return path


def _mapped(path: Path, name: str):
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    return np.array(array) if name.startswith("words_") else array


_REMOVE_AT_EXIT: list[Path] = []


def _remove_at_exit(folder: Path) -> None:
    if not _REMOVE_AT_EXIT:
        atexit.register(_remove_stores)
    _REMOVE_AT_EXIT.append(folder)


def _remove_stores() -> None:
    for path in _REMOVE_AT_EXIT:
        shutil.rmtree(path, ignore_errors=True)


def _remove_abandoned(folder: Path) -> None:
    """Temporary folders that processes no longer running left behind (a kill -9 in a parse)."""
    try:
        candidates = [path for path in folder.iterdir() if path.name.startswith(_TEMPORARY)]
    except OSError:
        return
    for path in candidates:
        pid = path.name[len(_TEMPORARY) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and process_running(int(pid)) is False:
            shutil.rmtree(path, ignore_errors=True)
