"""The arguments and options the commands share, their types and checks: each declared once, as
an ``Annotated`` alias, so two commands that take ``--set`` or ``--device`` take the same one."""

from __future__ import annotations

import enum
import math
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from .app import UsageError


def above_zero(value: float | None) -> float | None:
    """A number of seconds or megabytes: finite and above 0 (nan and inf parse as floats too)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value:g}: give a finite number above 0")
    return value


def _delimiter(value: str | None) -> str | None:
    """--delimiter: , ; | or a tab, also written as a word (tab, comma, semicolon, pipe) or \\t."""
    if value is None:
        return None
    from ..config import DELIMITER_ALIASES
    from ..data.dialect import DELIMITERS

    delimiter = DELIMITER_ALIASES.get(value, value)
    if delimiter not in DELIMITERS:
        raise typer.BadParameter(f"{value!r}: use one of , ; tab |, or leave it out to detect it")
    return delimiter


class ExportFormat(str, enum.Enum):
    """The file formats of ``dltrain export`` (commands/export's FORMATS)."""

    onnx = "onnx"


class ExportInputs(str, enum.Enum):
    """The input forms of ``dltrain export`` (commands/export's INPUT_FORMS)."""

    columns = "columns"
    features = "features"


class Device(str, enum.Enum):
    """Where to compute (the config's train.device)."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


DeviceOption = Annotated[
    Optional[Device],
    typer.Option(
        help="Where to compute: cpu, cuda (a GPU, through CuPy: pip install '.[cuda12]'), or auto (the GPU where "
        "one is found and the network is large enough to gain). Overrides train.device.",
        case_sensitive=False,
        show_default=False,
    ),
]


def device_name(value) -> str | None:
    """--device as the config writes it (None: left out)."""
    return None if value is None else Device(value).value


ConfigArg = Annotated[Path, typer.Argument(help="YAML config file.", show_default=False)]
RunArg = Annotated[Path, typer.Argument(help="Run folder written by `dltrain fit`.", show_default=False)]
DataArg = Annotated[Path, typer.Argument(help="CSV file with a header row.", show_default=False)]
DelimiterOption = Annotated[
    Optional[str],
    typer.Option(
        help="The CSV's delimiter: , ; tab or | (default: detected in the file).",
        callback=_delimiter,
        show_default=False,
    ),
]
EncodingOption = Annotated[
    Optional[str],
    typer.Option(
        help="The CSV's text encoding, e.g. latin-1 (default: UTF-8, with or without a BOM).", show_default=False
    ),
]
SetOption = Annotated[
    Optional[List[str]],
    typer.Option("--set", help="Override a config key, e.g. --set train.epochs=20 (repeatable).", show_default=False),
]


QuietReadOption = Annotated[
    bool, typer.Option("--quiet", help="No progress report while a large CSV file is read (on stderr).")
]
QuietOption = Annotated[bool, typer.Option("--quiet", help="Print only the final summary.")]
ForceOutOption = Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")]

# A command that takes --set: typer hands the words it cannot place to refuse_extra_arguments.
EXTRA_ARGUMENTS = {"allow_extra_args": True}


def refuse_extra_arguments(ctx: typer.Context, overrides):
    """A word after --set KEY (``--set train.epochs 50``) is its value written with a space."""
    if not ctx.args:
        return
    extra = ctx.args[0]
    keys = [text for text in overrides or [] if "=" not in text]
    if keys:
        raise UsageError(f"--set {keys[0]} {extra}: write --set {keys[0]}={extra} (KEY=VALUE, no space)", ctx)
    raise UsageError(f"unexpected argument {extra!r}", ctx)


def json_text(value) -> str:
    """One line of JSON; NaN (e.g. ROC AUC when one class is absent) becomes null: bare NaN is not JSON."""
    import json

    return json.dumps(json_safe(value))


def json_safe(value):
    """``value`` with every inf and NaN inside it as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value
