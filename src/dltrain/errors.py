"""Errors a user can cause. The CLI turns each into one readable message and an exit code."""


class DltrainError(Exception):
    """A mistake in the user's config, data, command line or run folder (exit code 2)."""

    exit_code = 2


class ConfigError(DltrainError):
    """The YAML config, or a --set override, is invalid."""


class DataError(DltrainError):
    """A CSV file cannot be used as described by the config."""


class ArtifactError(DltrainError):
    """A run folder is missing, incomplete, tampered with or from an unknown version."""


class TrainingDiverged(DltrainError):
    """The loss or a gradient became non-finite during training (exit code 3)."""

    exit_code = 3
