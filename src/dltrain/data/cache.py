"""A cache of parsed CSV columns, so the next fit on the same file skips the parsing.

One entry per CSV file and set of read options: ``<name>-<key>.npz`` holds plain arrays only
(loaded with ``allow_pickle=False``), and ``<name>-<key>.json`` beside it records the CSV's
SHA-256, the options and the SHA-256 of the ``.npz`` itself. An entry is used only while all
three match: arrays replaced or damaged behind an intact record are never trained on. Hashing is skipped when the
file's size, inode, modification and change times are exactly those seen when it was last
hashed, and that hash was taken well after the last modification (the rule git uses for its
index). Entries live in ``.dltrain-cache/`` beside the config, or in ``$DLTRAIN_CACHE_DIR``;
``data.cache: false`` turns the cache off. Files under ``MIN_BYTES`` are never cached: parsing
them costs less than loading an entry. A damaged or unreadable entry is ignored and replaced;
a cache that cannot be written is skipped, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DltrainError
from ..files import MANIFEST_LIMIT, atomic_file, atomic_write, check_npz, open_regular, read_regular
from .csv import MISSING_TOKENS, Columns, CsvFile

CACHE_FORMAT = 2  # 2: the record holds the arrays' own SHA-256
CACHE_ENV = "DLTRAIN_CACHE_DIR"
MIN_BYTES = 1 << 20
_RACY_SECONDS = 2.0  # a file modified this close to its hashing may change again within one mtime tick
_COMPACT_TYPES = (np.uint8, np.int8, np.uint16, np.int16)


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
        return _handle_sha256(handle)


def _handle_sha256(handle) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(1 << 22):
        digest.update(chunk)
    return digest.hexdigest()


def _fingerprint(path: Path) -> list:
    status = path.stat()
    return [status.st_size, status.st_ino, status.st_mtime_ns, status.st_ctime_ns]


def read_columns(table: CsvFile, request: dict, folder: Path | None) -> Columns:
    """``table.read(**request)``, through the cache in ``folder`` (None: no cache)."""
    try:
        fingerprint = _fingerprint(table.path)
    except OSError:
        return table.read(**request)
    if folder is None or fingerprint[0] < MIN_BYTES:
        return table.read(**request)
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
    stem = "".join(character if character.isalnum() or character in "._-" else "_" for character in table.path.stem)[
        :40
    ]
    entry = Path(folder) / f"{stem}-{key}"
    columns = _load(entry, table, options, fingerprint)
    if columns is not None:
        return columns
    digest = file_sha256(table.path)
    hashed_at = time.time_ns()
    columns = table.read(**request)
    try:
        unchanged = _fingerprint(table.path) == fingerprint
    except OSError:
        unchanged = False
    if unchanged:  # a file rewritten while it was read must not be cached under the old hash
        _store(entry, columns, options, digest, fingerprint, hashed_at)
    return columns


def _load(entry: Path, table: CsvFile, options: dict, fingerprint: list) -> Columns | None:
    meta_path, arrays_path = _paths(entry)
    try:
        meta = json.loads(read_regular(meta_path, OSError, limit=MANIFEST_LIMIT).decode("utf-8"))
        if meta.get("options") != options:
            return None
        trusted = (
            meta.get("fingerprint") == fingerprint and meta.get("hashed_at", 0) - fingerprint[2] > _RACY_SECONDS * 1e9
        )
        if not trusted:
            if file_sha256(table.path) != meta.get("sha256"):
                return None
            meta.update(fingerprint=fingerprint, hashed_at=time.time_ns())
            _write_meta(meta_path, meta)
        with open_regular(arrays_path, OSError) as handle:
            if _handle_sha256(handle) != meta.get("arrays_sha256"):
                return None  # arrays replaced or damaged behind an intact record
            handle.seek(0)
            check_npz(handle)  # a forged header must not make np.load allocate terabytes
            handle.seek(0)
            archive = np.load(handle, allow_pickle=False)
            numeric, wide, text = meta["numeric"], meta["wide"], meta["text"]
            lines = archive["lines"].astype(np.int64)
            stored = archive["matrix"]
            matrix = stored if stored.dtype == np.float32 else stored.astype(np.float32)
            wide_columns = {name: archive[f"wide_{index}"] for index, name in enumerate(wide)}
            text_columns = {name: archive[f"text_{index}"] for index, name in enumerate(text)}
        n_rows = lines.shape[0]
        if (
            matrix.shape != (n_rows, len(numeric))
            or n_rows == 0
            or any(values.shape != (n_rows,) or values.dtype != np.float64 for values in wide_columns.values())
            or any(values.shape != (n_rows,) or values.dtype.kind != "U" for values in text_columns.values())
        ):
            return None
        return Columns(table.path, lines, list(numeric), matrix, wide_columns, text_columns, bool(meta["integral"]))
    except (OSError, DltrainError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile, EOFError):
        return None  # a damaged, foreign or unwritable entry only costs a parse


def _paths(entry: Path) -> tuple[Path, Path]:
    return entry.parent / f"{entry.name}.json", entry.parent / f"{entry.name}.npz"


def _compact(matrix: np.ndarray, integral: bool) -> np.ndarray:
    """The matrix in the smallest integer type that holds it exactly, when every value is an integer."""
    if not integral or matrix.size == 0:
        return matrix
    low, high = float(matrix.min()), float(matrix.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        return matrix
    for dtype in _COMPACT_TYPES:
        limits = np.iinfo(dtype)
        if limits.min <= low and high <= limits.max:
            return matrix.astype(dtype)
    return matrix


def _write_meta(path: Path, meta: dict):
    atomic_write(path, json.dumps(meta, indent=1) + "\n")


def _store(entry: Path, columns: Columns, options: dict, digest: str, fingerprint: list, hashed_at: int):
    arrays = {
        "matrix": _compact(columns.matrix, columns.integral),
        "lines": columns.lines.astype(np.int32) if columns.lines[-1] < 2**31 else columns.lines,
    }
    arrays.update({f"wide_{index}": values for index, values in enumerate(columns.wide.values())})
    arrays.update({f"text_{index}": values for index, values in enumerate(columns.text.values())})
    meta = {
        "options": options,
        "sha256": digest,
        "fingerprint": fingerprint,
        "hashed_at": hashed_at,
        "numeric": columns.numeric_names,
        "wide": list(columns.wide),
        "text": list(columns.text),
        "integral": columns.integral,
        "rows": columns.n_rows,
    }
    meta_path, arrays_path = _paths(entry)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)  # never a new meta beside old arrays
        with atomic_file(arrays_path) as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds too narrowly
        meta["arrays_sha256"] = file_sha256(arrays_path)
        _write_meta(meta_path, meta)
    except (OSError, DltrainError):
        pass  # a read-only or full disk only costs the next fit a parse
