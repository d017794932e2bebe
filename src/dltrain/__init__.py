"""dltrain: config-driven neural-network training on CSV files, on a pure-NumPy engine.

The Python API (``dltrain.fit``, ``dltrain.load``, ``dltrain.Run``; see ``dltrain.api``) is
imported on first use, so ``import dltrain`` and the command line start at once."""

from typing import TYPE_CHECKING

# First, before anything loads NumPy or numba: their thread pools read the environment once.
from .engine.threads import configure_environment as _configure_environment

_configure_environment()

__version__ = "0.1.0"
__all__ = ["fit", "load", "Run", "Predictions", "__version__"]

if TYPE_CHECKING:  # for type checkers and editors; at run time, __getattr__ below
    from .api import Run, fit, load
    from .predictions import Predictions

_API = {"fit": "api", "load": "api", "Run": "api", "Predictions": "predictions"}


def __getattr__(name: str):
    """``dltrain.fit`` and the rest of the API, imported when first asked for."""
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dltrain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_API))
