"""Errors a user can cause. The CLI turns each into one readable message and an exit code."""

import signal


class DltrainError(Exception):
    """A mistake in the user's config, data, command line or run folder (exit code 2)."""

    exit_code = 2


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
