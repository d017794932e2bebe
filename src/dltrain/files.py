"""Files in and out: regular files only, bounded sizes and .npy headers; atomic writes; disk errors.

Every input dltrain reads (configs, CSVs, run folder files, cache entries) is opened here, so
a device such as ``/dev/zero``, a FIFO that never ends, a socket, or a symlink to one of them
is refused before a byte is read, and a small text file cannot grow into gigabytes of memory.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import io
import os
import stat
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import ArtifactError, DltrainError, StorageError
from .system import OPEN_FOLDERS, available_memory

MiB = 1 << 20
CONFIG_LIMIT = 4 * MiB  # a YAML config: parsing 4 MiB takes ~15 s and ~600 MB already
MANIFEST_LIMIT = 256 * MiB  # model.json, config.yaml, history.csv of a run folder

_KINDS = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def human_bytes(count: float) -> str:
    """A byte count as people write it: 512 B, 3.2 MB, 16.0 TB."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(count) < 1000 or unit == "PB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} PB"


def text_codec(encoding: str) -> str:
    """The codec name for a text encoding a user gave (utf-8 reads a byte-order mark too).

    ValueError for an unknown name, or a codec that is not for text (rot13, base64, hex)."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"unknown text encoding {encoding!r}; use e.g. utf-8, latin-1 or cp1252") from None
    if not getattr(info, "_is_text_encoding", True):
        raise ValueError(f"{encoding!r} is not a text encoding; use e.g. utf-8, latin-1 or cp1252")
    return "utf-8-sig" if info.name in ("utf-8", "utf-8-sig") else info.name


def decodes_as(path, codec: str) -> bool:
    """Whether a file's bytes are text in ``codec`` (read to the first byte that is not). A file
    that cannot be read counts as text: reading it for real reports what is wrong."""
    decoder = codecs.getincrementaldecoder(codec)()
    try:
        with open_regular(path) as handle:
            while chunk := handle.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeError:
        return False
    except (DltrainError, OSError):
        return True
    return True


_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def open_regular(
    path,
    error=DltrainError,
    *,
    kind: str = "file",
    not_found: str | None = None,
    limit: int | None = None,
    text: bool = False,
    encoding: str | None = None,
    newline: str | None = None,
    dir_fd: int | None = None,
    shown=None,
):
    """Open ``path`` for reading if it is a regular file (after symlinks) no larger than ``limit``.

    Anything else is ``error`` naming the path: missing, a folder, a device, a FIFO, a socket,
    unreadable, or too large. The file is opened without blocking, so a FIFO is refused
    instead of waiting for a writer forever. With ``dir_fd``, ``path`` is relative to that
    folder descriptor, ``shown`` is the path for messages, and a missing file raises
    FileNotFoundError itself (the caller knows what a missing file means there)."""
    shown = Path(shown if shown is not None else path)
    try:
        descriptor = os.open(path, _FLAGS, dir_fd=dir_fd) if dir_fd is not None else os.open(path, _FLAGS)
    except FileNotFoundError:
        if dir_fd is not None:
            raise
        raise error(not_found or f"{shown}: {kind} not found") from None
    except IsADirectoryError:
        raise error(f"{shown}: is a folder, not a {kind}") from None
    except OSError as problem:
        raise error(
            f"{shown}: cannot read ({problem.strerror or problem}); check the path and its permissions"
        ) from None
    except ValueError:  # a NUL character, which no file name can hold
        raise error(f"{str(shown)!r}: not a usable file name (it holds a NUL character)") from None
    try:
        status = os.fstat(descriptor)
        if stat.S_ISDIR(status.st_mode):
            raise error(f"{shown}: is a folder, not a {kind}")
        if not stat.S_ISREG(status.st_mode):
            what = _KINDS.get(stat.S_IFMT(status.st_mode), "not a regular file")
            raise error(f"{shown}: is {what}, not a regular file; dltrain reads only regular files, give a {kind}")
        if limit is not None and status.st_size > limit:
            raise error(
                f"{shown}: is {human_bytes(status.st_size)}, more than a {kind} may be "
                f"({human_bytes(limit)}); check that this is the right file"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    if text:
        return io.TextIOWrapper(handle, encoding=encoding, newline=newline)
    return handle


def read_regular(
    path,
    error=DltrainError,
    *,
    kind: str = "file",
    not_found: str | None = None,
    limit: int | None = None,
    dir_fd: int | None = None,
    shown=None,
) -> bytes:
    """The whole content of a regular file, never more than ``limit`` bytes (a file that grows is cut off)."""
    shown = Path(shown if shown is not None else path)
    with open_regular(path, error, kind=kind, not_found=not_found, limit=limit, dir_fd=dir_fd, shown=shown) as handle:
        chunks, total = [], 0
        try:
            # In pieces: read(limit + 1) would reserve the whole limit up front.
            while chunk := handle.read(1 << 24):
                chunks.append(chunk)
                total += len(chunk)
                if limit is not None and total > limit:
                    raise error(
                        f"{shown}: is more than a {kind} may be ({human_bytes(limit)}); check that this "
                        "is the right file"
                    )
        except OSError as problem:
            raise error(f"{shown}: cannot read ({problem.strerror or problem})") from None
    return b"".join(chunks)


def check_npz(source):
    """Raise ValueError when an .npz's .npy headers claim more data than the archive holds.

    ``np.load`` allocates the shape a header claims before reading any data, so a crafted
    header of 10⁶×10⁶ would ask for terabytes. Our archives store their members
    uncompressed; each member must hold exactly its header's shape of data."""
    total = 0
    with zipfile.ZipFile(source) as archive:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
                raise ValueError(f"member {info.filename!r} is compressed, and dltrain writes its files uncompressed")
            total += info.file_size
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                header_size = member.tell()
            claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if claimed != info.file_size - header_size:
                raise ValueError(
                    f"member {info.filename!r} claims shape {tuple(shape)} ({human_bytes(claimed)}) "
                    f"but holds {human_bytes(info.file_size - header_size)} of data"
                )
    memory = available_memory()
    if total > memory:
        raise ValueError(
            f"its arrays need {human_bytes(total)}, more than the {human_bytes(memory)} of memory available"
        )


# ---------------------------------------------------------------------- writing

UMASK = os.umask(0o022)  # the process's umask, read (by setting it) once: new files are made with it
os.umask(UMASK)

# ---------------------------------------------------------------------- disk errors

_USER_FIXES = {
    errno.EACCES: "permission denied; choose a place you can write to",
    errno.EPERM: "permission denied; choose a place you can write to",
    errno.EROFS: "the file system is read-only; choose another place",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another place",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter one",
    errno.EISDIR: "is a folder; give a file name",
    errno.ENOENT: "the folder does not exist; create it first or choose another place",
    errno.EEXIST: "already exists; choose another name",
}
_DISK_FIXES = {
    errno.ENOSPC: "no space left on the device; free some space",
    errno.EDQUOT: "the disk quota is used up; free some space",
    errno.EFBIG: "the file size limit was reached (see `ulimit -f`); raise it",
    errno.EIO: "an input/output error; check the disk",
}


def disk_error(error: OSError, path) -> DltrainError:
    """One readable error for a failed write: what went wrong at which path, and the fix.

    A full disk or a size limit is not the user's typing (exit 1); a path that cannot be
    written is (exit 2)."""
    if error.errno in _DISK_FIXES:
        return StorageError(f"{path}: cannot write: {_DISK_FIXES[error.errno]}")
    if error.errno in _USER_FIXES:
        return ArtifactError(f"{path}: cannot write: {_USER_FIXES[error.errno]}")
    return StorageError(f"{path}: cannot write ({error.strerror or error})")


def write_all(handle, payload: bytes | memoryview):
    """Every byte a run folder, checkpoint or cache entry gets goes through here (fault tests patch it)."""
    handle.write(payload)


def fsync_folder(path: Path):
    """Flush a folder's entries (a rename, a new file in it) to disk (where a folder can be opened:
    not on Windows, whose NTFS journals them itself)."""
    if not OPEN_FOLDERS:
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def check_writable(path: Path, make_parents: bool = False):
    """A clear error, before any writing, when ``path`` cannot become a file.

    With ``make_parents`` (a command's --out, written by ``write_output``), missing folders above
    it are no error, but a file where one of them should be is."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path}: is a folder; give a file name to write to")
    if not make_parents:
        if not path.parent.is_dir():
            raise ArtifactError(f"{path.parent}: folder not found; create it first or write elsewhere")
        return
    try:
        nearest = next(folder for folder in path.parents if folder.exists())
    except OSError as error:  # a name too long, ...
        raise disk_error(error, path) from None
    if not nearest.is_dir():
        raise ArtifactError(f"{nearest}: is a file, not a folder; choose another --out")


def make_parent_folders(path):
    """Create the missing folders above an output file, as ``fit`` does for its --out."""
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ArtifactError(f"{parent}: is a file, not a folder; choose another --out") from None
    except OSError as error:
        raise disk_error(error, parent) from None


def write_output(path, data: bytes | str):
    """A command's --out file (predictions, a plot, an ONNX model, a starter config): the missing
    folders above it made, then the file replaced atomically."""
    check_writable(Path(path), make_parents=True)
    make_parent_folders(path)
    atomic_write(path, data)


@contextlib.contextmanager
def atomic_file(path, durable: bool = True):
    """A binary handle whose file appears at ``path`` whole, or not at all.

    Written to a temporary file beside ``path``, fsynced, then renamed over it. ``durable=False``
    skips the fsyncs: still safe against a crash of this process, not against losing power.
    Disk errors become one readable DltrainError; the old file at ``path`` stays as it was."""
    path = Path(path)
    check_writable(path)
    temporary = None
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        if hasattr(os, "fchmod"):  # not on Windows, which has no such modes
            os.fchmod(descriptor, 0o666 & ~UMASK)  # mkstemp's 0600 would hide runs from other users
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
        temporary = None
        if durable:
            fsync_folder(path.parent)
    except OSError as error:
        raise disk_error(error, path) from None
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)


def atomic_write(path, data: bytes | str, durable: bool = True):
    """Replace ``path`` with ``data`` atomically (see ``atomic_file``)."""
    with atomic_file(path, durable) as handle:
        write_all(handle, data.encode("utf-8") if isinstance(data, str) else data)
