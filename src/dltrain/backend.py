"""The array module used by the engine, behind one name so a GPU array library can replace it."""

import numpy as xp

DEFAULT_DTYPE = xp.float32

__all__ = ["xp", "DEFAULT_DTYPE"]
