"""The DLTRAIN_* variables, checked before any command runs: a value dltrain cannot use is one
message naming the variable, never a setting silently ignored.

Light on purpose: ``dltrain --version`` checks DLTRAIN_KERNELS without loading NumPy (the data
cache's check, which needs it, is imported only when a command runs)."""

from __future__ import annotations

import os

from ..engine import kernels
from ..engine.threads import KERNELS_VARIABLE
from ..errors import DltrainError, did_you_mean


def check_kernels_variable(environ=os.environ) -> None:
    """DLTRAIN_KERNELS: auto (or unset) or reference, case aside."""
    try:
        kernels.setting(environ)
    except ValueError:
        value = environ.get(KERNELS_VARIABLE, "")
        raise DltrainError(
            f"{KERNELS_VARIABLE}={value}: not a setting{did_you_mean(value.strip().lower(), kernels.SETTINGS)}; "
            f"set it to {' or '.join(kernels.SETTINGS)} (auto, the default: the fused kernels where "
            "they pay; reference: the plain NumPy path everywhere), or unset it"
        ) from None


def check_environment(environ=os.environ) -> None:
    """Every DLTRAIN_* variable a command reads at its start (DLTRAIN_KERNELS, DLTRAIN_CACHE_DIR)."""
    from ..data import cache as data_cache

    check_kernels_variable(environ)
    data_cache.configured_folder(environ)
