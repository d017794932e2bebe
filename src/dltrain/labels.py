"""One spelling per class label, shared by the config (class weights) and the data."""

from __future__ import annotations

import math


def canonical_label(value) -> str:
    """One spelling per class label, so '1', '1.0' and ' 1' are the same class."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return canonical_number(number) if math.isfinite(number) else text


def canonical_number(number: float) -> str:
    """A finite number as a label: 3.0 -> "3", 2.5 -> "2.5"."""
    return str(int(number)) if number == int(number) else repr(float(number))
