"""Errors a user can cause. The CLI turns each into one readable message and an exit code."""

import difflib
import re
import shlex
import signal

_MAX_FUZZY_OPTIONS = 5000  # difflib compares with every option; a huge header gets only the case match


class DltrainError(Exception):
    """A mistake in the user's config, data, command line or run folder (exit code 2).

    ``hint`` says what to do, or where things stand, when the code that knows it is not the code
    that found the mistake (fit knows where a run stands when a checkpoint cannot be written): the
    CLI prints it on its own line after the message; ``str()`` holds both."""

    exit_code = 2

    def __init__(self, message: str = "", *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    @property
    def message(self) -> str:
        """What went wrong, without the hint."""
        return str(self.args[0]) if self.args else ""

    def add_hint(self, hint: str) -> None:
        """Add a hint after any the error has already."""
        self.hint = f"{self.hint}; {hint}" if self.hint else hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class ConfigError(DltrainError):
    """The YAML config, or a --set override, is invalid."""


class DataError(DltrainError):
    """A CSV file cannot be used as described by the config."""


class ArtifactError(DltrainError):
    """A run folder is missing, incomplete, tampered with or from an unknown version."""


class StorageError(DltrainError):
    """The disk refused a write that nothing the user typed made wrong (full disk, file size limit): exit 1."""

    exit_code = 1


class TrainingDiverged(DltrainError):
    """The loss or a gradient became non-finite during training (exit code 3)."""

    exit_code = 3


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, or a SIGTERM / SIGHUP turned into the same orderly stop."""

    def __init__(self, signal_number: int = signal.SIGINT):
        super().__init__(signal_number)
        self.signal_number = int(signal_number)


def signal_of(interrupt: KeyboardInterrupt) -> int:
    return getattr(interrupt, "signal_number", signal.SIGINT)


class TrainingInterrupted(DltrainError):
    """A fit stopped by a signal: exit code 128 + the signal's number, as a shell reports it."""

    def __init__(self, message: str, signal_number: int = signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + int(signal_number)


def did_you_mean(word, options) -> str:
    """ " (did you mean 'X'?)" for the option nearest ``word``, or "" when none is close.

    The same word in another case wins (``Relu`` -> ``relu``, ``churned`` -> ``Churned``);
    otherwise the closest spelling, compared case-blind. Serves config keys, values and
    column names alike."""
    word = str(word)
    options = [str(option) for option in options]
    if word in options:
        return ""
    folded = word.casefold()
    for option in options:
        if option.casefold() == folded and option != word:
            return f" (did you mean {option!r}?)"
    if len(options) > _MAX_FUZZY_OPTIONS:
        return ""
    by_folded: dict[str, str] = {}
    for option in options:
        by_folded.setdefault(option.casefold(), option)
    matches = difflib.get_close_matches(folded, list(by_folded), n=1, cutoff=0.6)
    return f" (did you mean {by_folded[matches[0]]!r}?)" if matches else ""


def install_hint(extra: str) -> str:
    """How to install one of dltrain's extras (plot, onnx, tune): from the project's folder, as
    ``pip install '.[onnx]'``, never by the name dltrain, which on the public index is another
    project. The packages themselves are named too, from the installed metadata, for a dltrain
    installed from elsewhere."""
    from importlib import metadata  # only here: its import is a tenth of the command line's start-up

    try:
        requirements = metadata.requires("dltrain") or []
    except metadata.PackageNotFoundError:
        requirements = []
    marker = re.compile(rf"""extra\s*==\s*['"]{re.escape(extra)}['"]""")
    packages = [text.split(";")[0].strip() for text in requirements if marker.search(text)]
    alternative = f" (or: pip install {shlex.join(packages)})" if packages else ""
    return f"pip install '.[{extra}]' in dltrain's project folder{alternative}"
