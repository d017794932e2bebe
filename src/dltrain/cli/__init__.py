"""The `dltrain` command line: parse arguments, call one command function, render the result.

It starts at once: this package imports the standard library and typer only, so `dltrain --help`,
`dltrain COMMAND --help` and `dltrain --version` never load NumPy, pydantic, rich's tables or a
command's module; each command imports what it needs when it runs. app.py holds the Typer app and
the one way errors reach the user; options.py the arguments and options commands share;
config_commands.py the commands on a config (init, check, fit, tune, schema), run_commands.py
those on a trained run (eval, predict, export, plot, explain, serve). Below, every command is
registered, in the order `dltrain --help` lists them.
"""

from __future__ import annotations

import signal

from .app import app, show_error, user_errors
from .config_commands import check, fit, init, schema, tune
from .options import EXTRA_ARGUMENTS, Device, ExportFormat, ExportInputs
from .run_commands import evaluate, explain, export, plot, predict, serve

app.command()(init)
app.command(context_settings=EXTRA_ARGUMENTS)(check)
app.command(context_settings=EXTRA_ARGUMENTS)(fit)
app.command(name="eval")(evaluate)
app.command()(predict)
app.command()(export)
app.command()(schema)
app.command()(plot)
app.command()(tune)
app.command()(explain)
app.command()(serve)

__all__ = ["Device", "ExportFormat", "ExportInputs", "app", "main", "show_error", "user_errors"]


def main():
    if hasattr(signal, "SIGXFSZ"):
        # Past `ulimit -f` a write then fails with EFBIG, reported in words, instead of killing us.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    app()
