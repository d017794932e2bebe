"""A CSV file's dialect and how it is opened: the encoding, line ends and delimiter, read from a
sample of its first lines, and the message naming the first line that is not valid text."""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

from ..errors import DataError
from ..files import open_regular, text_codec

DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}
_SAMPLE_CHARS = 1 << 16
_SAMPLE_ROWS = 50


def open_csv(path: Path, content: bytes | None, *, not_found=None, text=False, encoding=None, newline=None):
    """A CSV file opened for reading (see files.open_regular), or ``content`` read as if it were that file."""
    if content is not None:
        handle = io.BytesIO(content)
        return io.TextIOWrapper(handle, encoding=encoding, newline=newline) if text else handle
    return open_regular(
        path, DataError, kind="CSV file", not_found=not_found, text=text, encoding=encoding, newline=newline
    )


def codec_named(encoding: str) -> str:
    """The codec for ``data.encoding``'s value; a DataError when there is none."""
    try:
        return text_codec(encoding)
    except ValueError as error:
        raise DataError(str(error)) from None


def count_lines(path: Path, content: bytes | None = None) -> int:
    """An upper bound on the number of records: line breaks of any style, plus one."""
    counts = {b"\n": 0, b"\r": 0}
    try:
        for separator in counts:  # \r only for old Mac files, which have no \n at all
            with open_csv(path, content) as handle:
                while chunk := handle.read(1 << 22):
                    counts[separator] += chunk.count(separator)
            if counts[separator]:
                break
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
    return max(counts.values()) + 1


def normalized(text: str, cr_lines: bool) -> str:
    """Line breaks as \\n. A lone \\r ends a line only in a file without \\n (old Mac files);
    elsewhere it is a stray character inside a line, read as a space, so line numbers and
    field counts stay those an editor shows."""
    if "\r" not in text:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n" if cr_lines else " ")


def read_sample(path: Path, codec: str, encoding_setting: str = "data.encoding", content: bytes | None = None) -> str:
    """The start of the file as text: whole lines, enough to see the header and the dialect."""
    try:
        with open_csv(
            path, content, not_found=f"{path}: file not found", text=True, encoding=codec, newline=""
        ) as handle:
            sample = handle.read(_SAMPLE_CHARS)
            while len(sample) >= _SAMPLE_CHARS and not sample.endswith(("\n", "\r")):
                more = handle.readline()
                if not more:
                    break
                sample += more
            return sample
    except UnicodeError:
        raise decode_error(path, codec, encoding_setting, content) from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None


def decode_error(
    path: Path, codec: str, encoding_setting: str = "data.encoding", content: bytes | None = None
) -> DataError:
    """Name the first line that is not valid text in ``codec``."""
    decoder = codecs.getincrementaldecoder(codec)()
    with open_csv(path, content) as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as error:
                shown = codec.replace("-sig", "")
                where = (
                    f"byte {raw[error.start]:#04x} at column {error.start + 1}"
                    if 0 <= error.start < len(raw)
                    else str(error.reason)
                )
                return DataError(
                    f"{path}:{line_number}: not {shown} text ({where}); save the file as UTF-8, or set "
                    f"{encoding_setting} (e.g. latin-1 or cp1252)"
                )
            except UnicodeError as error:  # e.g. UTF-16 without its byte-order mark
                return DataError(
                    f"{path}:{line_number}: not {codec} text ({error}); save the file as UTF-8, or set "
                    f"{encoding_setting} (e.g. latin-1 or cp1252)"
                )
    return DataError(f"{path}: not {codec} text; save the file as UTF-8 or set {encoding_setting}")


def detect_delimiter(sample: str) -> str:
    """The delimiter among , ; tab | that splits the sample's rows into equal numbers of fields."""
    rows_text = sample.splitlines()[: _SAMPLE_ROWS + 1]
    best, best_score = ",", (False, 1)
    for delimiter in DELIMITERS:
        try:
            rows = [row for row in csv.reader(rows_text, delimiter=delimiter) if "".join(row).strip()]
        except csv.Error:
            continue
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        # The last sampled row may be cut short or hold a quoted line break; it does not vote.
        consistent = all(len(row) == width for row in rows[1:-1] or rows[1:])
        score = (consistent, width)
        if score > best_score:
            best, best_score = delimiter, score
    return best
