"""Convert Debian's ``dataset-fashion-mnist`` package into the CSV files the benchmarks use.

Reads the IDX files that ``apt-get install dataset-fashion-mnist`` puts under
/usr/share/datasets/fashion-mnist (gzipped in the Debian package; plain IDX files
are accepted too) and writes, relative to the repository root:

    data/fashion-mnist/train.csv   60,000 rows
    data/fashion-mnist/test.csv    10,000 rows

Header ``label,p0,...,p783``; the label comes first; pixels are integers 0-255.
Each file is written to a temporary file beside it and then moved into place with
os.replace, so a reader never sees half a file. A file that already exists and is
newer than the IDX files it comes from is left alone unless ``--force`` is given.

Usage:  python bench/prepare_fashion_mnist.py [--force] [--source DIR]
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
OUT_DIR = REPO_ROOT / "data" / "fashion-mnist"
APT_HINT = "apt-get update && apt-get install -y dataset-fashion-mnist"

# split name -> (images stem, labels stem, expected number of rows)
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}

IDX_UBYTE_MAGIC = {1: 0x00000801, 3: 0x00000803}


class PrepareError(Exception):
    """A problem the user can fix; printed as one sentence, exit code 2."""


def find_idx(source: Path, stem: str) -> Path:
    """Return the IDX file for ``stem`` in ``source``, gzipped or not."""
    for name in (stem + ".gz", stem):
        path = source / name
        if path.is_file():
            return path
    raise FileNotFoundError(stem)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file with ``ndim`` dimensions into a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise PrepareError(f"{path} is too short to be an IDX file.")
    magic = int.from_bytes(raw[0:4], "big")
    if magic != IDX_UBYTE_MAGIC[ndim]:
        raise PrepareError(
            f"{path} is not an unsigned-byte IDX file with {ndim} dimension(s) (magic number {magic:#010x})."
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_len)
    if data.size != expected:
        raise PrepareError(f"{path} holds {data.size} values where its header announces {expected}.")
    return data.reshape(dims)


def _cell_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables indexed by a byte value 0..255, each entry 4 bytes packed in a uint32.

    ``comma[v]`` holds the decimal digits of v followed by ',', ``newline[v]`` the digits
    followed by '\\n' (both zero-padded to 4 bytes), and ``keep[v]`` has byte 1 where
    those 4 bytes hold a real character and 0 where they are padding.
    """
    comma = np.zeros((256, 4), dtype=np.uint8)
    newline = np.zeros((256, 4), dtype=np.uint8)
    keep = np.zeros((256, 4), dtype=np.uint8)
    for value in range(256):
        digits = str(value).encode("ascii")
        width = len(digits) + 1
        comma[value, :width] = np.frombuffer(digits + b",", dtype=np.uint8)
        newline[value, :width] = np.frombuffer(digits + b"\n", dtype=np.uint8)
        keep[value, :width] = 1
    return tuple(table.view(np.uint32).ravel() for table in (comma, newline, keep))


_COMMA, _NEWLINE, _KEEP = _cell_tables()


def csv_bytes(matrix: np.ndarray) -> bytes:
    """Format a uint8 matrix as CSV rows (no header), fully vectorised.

    Every value becomes a 4-byte cell: its digits followed by ',' (or '\\n' in the
    last column), zero-padded. A boolean mask looked up from the same value keeps
    only the real characters; boolean indexing returns them in row-major order.
    """
    rows, cols = matrix.shape
    cells = _COMMA[matrix]
    cells[:, -1] = _NEWLINE[matrix[:, -1]]
    keep = _KEEP[matrix].view(np.bool_).reshape(rows, cols * 4)
    return cells.view(np.uint8).reshape(rows, cols * 4)[keep].tobytes()


def write_csv_atomic(path: Path, header: bytes, matrix: np.ndarray, chunk_rows: int = 4096) -> None:
    """Write header + CSV rows of ``matrix`` to a temporary file in the same folder, then
    os.replace it into place. Rows are formatted in chunks to bound memory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(header)
            for start in range(0, matrix.shape[0], chunk_rows):
                fh.write(csv_bytes(matrix[start : start + chunk_rows]))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def up_to_date(out: Path, sources: list[Path]) -> bool:
    if not out.is_file():
        return False
    out_mtime = out.stat().st_mtime
    return all(out_mtime > src.stat().st_mtime for src in sources)


def convert_split(name: str, source: Path, force: bool) -> str:
    images_stem, labels_stem, expected_rows = SPLITS[name]
    images_path = find_idx(source, images_stem)
    labels_path = find_idx(source, labels_stem)
    out = OUT_DIR / f"{name}.csv"
    rel = out.relative_to(REPO_ROOT)
    if not force and up_to_date(out, [images_path, labels_path]):
        return f"{rel}: up to date, skipped (use --force to rewrite)"

    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape[0] != labels.shape[0]:
        raise PrepareError(
            f"{images_path.name} has {images.shape[0]} images but {labels_path.name} has {labels.shape[0]} labels."
        )
    if images.shape[0] != expected_rows:
        raise PrepareError(f"{images_path.name} has {images.shape[0]} images where {expected_rows} were expected.")
    n, rows, cols = images.shape
    matrix = np.empty((n, 1 + rows * cols), dtype=np.uint8)
    matrix[:, 0] = labels
    matrix[:, 1:] = images.reshape(n, rows * cols)

    header = ("label," + ",".join(f"p{i}" for i in range(rows * cols)) + "\n").encode("ascii")
    write_csv_atomic(out, header, matrix)
    size_mb = out.stat().st_size / 1e6
    return f"{rel}: wrote {n} rows x {1 + rows * cols} columns ({size_mb:.1f} MB)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rewrite the CSV files even if they are up to date")
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help=f"folder with the IDX files (default: {DEFAULT_SOURCE})",
    )
    args = parser.parse_args(argv)

    source: Path = args.source
    missing = []
    for images_stem, labels_stem, _ in SPLITS.values():
        for stem in (images_stem, labels_stem):
            try:
                find_idx(source, stem)
            except FileNotFoundError:
                missing.append(stem)
    if missing:
        if source == DEFAULT_SOURCE:
            print(
                f"Fashion-MNIST IDX files not found in {source}: install Debian's package with "
                f"`{APT_HINT}` and run this script again.",
                file=sys.stderr,
            )
        else:
            print(f"Fashion-MNIST IDX files not found in {source} (missing: {', '.join(missing)}).", file=sys.stderr)
        return 2

    start = time.perf_counter()
    try:
        for name in SPLITS:
            print(convert_split(name, source, args.force))
    except PrepareError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"Could not convert Fashion-MNIST: {exc}", file=sys.stderr)
        return 2
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
