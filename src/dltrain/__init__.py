"""dltrain: config-driven neural-network training on CSV files, on a pure-NumPy engine."""

__version__ = "0.1.0"
