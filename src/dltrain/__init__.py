"""dltrain: config-driven neural-network training on CSV files, on a pure-NumPy engine."""

# First, before anything loads NumPy or numba: their thread pools read the environment once.
from .engine.threads import configure_environment as _configure_environment

_configure_environment()

__version__ = "0.1.0"
