"""Where the user reads: the two consoles (stdout, stderr) that wrap on a terminal and never
elsewhere, tables whose cells are plain text, and the one-line error, warning and note."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text


class Table(RichTable):
    """A rich table whose cells and headers are plain text: a class label such as "[b]" or
    "[/]" is shown as written, never read as markup."""

    def add_column(self, header="", *args, **kwargs):
        super().add_column(Text(str(header)), *args, **kwargs)

    def add_row(self, *cells, **kwargs):
        super().add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in cells), **kwargs)


_UNWRAPPED_WIDTH = 10_000  # off a terminal: a log line or a table is never broken at 80 columns


def _console(stderr: bool = False) -> Console:
    """A console that wraps to the terminal's width on a terminal, and never wraps elsewhere."""
    stream = sys.stderr if stderr else sys.stdout
    on_terminal = hasattr(stream, "isatty") and stream.isatty()
    return Console(
        stderr=stderr, highlight=False, soft_wrap=not on_terminal, width=None if on_terminal else _UNWRAPPED_WIDTH
    )


console = _console()
error_console = _console(stderr=True)


def show_error(message: str):
    error_console.print(f"error: {message}", soft_wrap=True, markup=False)


def show_warning(message: str):
    error_console.print(f"warning: {message}", soft_wrap=True, markup=False)


def show_note(message: str):
    """Something the user should know about a result that is still right (on stderr, beside the output)."""
    error_console.print(f"note: {message}", soft_wrap=True, markup=False)


def write_text(text: str):
    sys.stdout.write(text)
    sys.stdout.flush()


def write_bytes(data: bytes):
    """Text already encoded in ``output_encoding()`` to stdout, at once (a block of predictions)."""
    sys.stdout.flush()
    stream = getattr(sys.stdout, "buffer", None)
    if stream is None:  # a stdout without bytes (replaced by a caller): as text
        sys.stdout.write(data.decode(output_encoding()))
        sys.stdout.flush()
        return
    stream.write(data)
    stream.flush()


def stdout_gone() -> None:
    """The reader of stdout went away (``dltrain predict ... | head``): what is still buffered, and
    Python's last flush at exit, go nowhere instead of failing again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # a stdout without a descriptor (a test's)
        pass


def output_encoding() -> str:
    """The encoding ``write_text`` writes stdout in."""
    return getattr(sys.stdout, "encoding", None) or "utf-8"


def log_line(text: str):
    """One line on stderr, flushed at once (a server's access and lifecycle lines)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
