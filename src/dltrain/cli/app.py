"""The Typer app and how everything reaches the user: every mistake, typer's (an unknown option,
a value out of range) or dltrain's, is one ``error: ...`` line on stderr, perhaps a ``hint: ...``
line, and its exit code (2 for a mistake); ``--version``; dltrain's warnings as one line each."""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Annotated

import typer
from typer.core import TyperGroup

from .. import __version__

# typer exports BadParameter alone of click's errors; its base is click's UsageError (or the
# copy of click newer typers carry), the class of every command-line mistake.
UsageError = next(base for base in typer.BadParameter.__mro__ if base.__name__ == "UsageError")


def show_error(message: str, hint: str | None = None) -> None:
    """The one way an error reaches the user: ``error: MESSAGE`` on stderr, then ``hint: HINT``."""
    typer.echo(f"error: {message}", err=True)
    if hint:
        typer.echo(f"hint: {hint}", err=True)


@contextlib.contextmanager
def _usage_errors():
    """A command-line mistake typer finds (or a command raises as one) printed as dltrain's errors are."""
    try:
        yield
    except UsageError as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # `dltrain` alone: typer shows the help
            raise
        ctx = getattr(error, "ctx", None)
        show_error(error.format_message(), f"see {ctx.command_path if ctx else 'dltrain'} --help")
        raise typer.Exit(error.exit_code) from None


class _Commands(TyperGroup):
    """The group of dltrain's commands, parsing and dispatching under ``_usage_errors``."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            # A flag left out is False, which typer passes on as it is; None (the default typer
            # gives --help and its completion flags) it parses through pydantic: 0.1 s more for
            # `dltrain COMMAND --help`.
            if getattr(param, "is_flag", False) and param.default is None:
                param.default = False
        return params

    def make_context(self, info_name, args, parent=None, **extra):
        with _usage_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with _usage_errors():
            return super().invoke(ctx)


app = typer.Typer(
    cls=_Commands,
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train neural networks described in YAML on CSV files.\n\n"
    "Example: dltrain fit configs/iris.yaml && dltrain eval runs/iris data/iris.csv",
)


def _show_version(value: bool):
    if value:
        from ..commands.environment import check_kernels_variable
        from ..engine import cuda, kernels
        from ..errors import DltrainError

        try:
            check_kernels_variable()
        except DltrainError as error:
            show_error(error.message, error.hint)
            raise typer.Exit(error.exit_code) from None
        # CuPy is imported only where it is installed, to name the GPU.
        typer.echo(f"dltrain {__version__}\nengine: {kernels.describe()}\ngpu: {cuda.describe()}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Print dltrain's version, which engine path is active (fused kernels or reference NumPy) "
            "and the GPU (through CuPy) where there is one, then exit.",
        ),
    ] = False,
):
    """Train neural networks described in YAML on CSV files."""


def user_errors(command):
    """Check the DLTRAIN_* variables, then run the command; dltrain's own errors become one
    message on stderr and their exit code; Ctrl-C, SIGTERM and SIGHUP stop it the same way
    (signals.stop_as_interrupt): "interrupted" and 128 + the signal's number."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from ..commands.environment import check_environment
        from ..errors import DltrainError, signal_of
        from ..signals import stop_as_interrupt

        try:
            with stop_as_interrupt():
                check_environment()
                with one_line_warnings():
                    return command(*args, **kwargs)
        except DltrainError as error:
            show_error(error.message, error.hint)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt as interrupt:
            show_error("interrupted")
            raise typer.Exit(128 + signal_of(interrupt)) from None

    return wrapper


@contextlib.contextmanager
def one_line_warnings():
    """dltrain's own warnings (a kernel cache it cannot use, a system without file locks) as one
    "warning: ..." line each, instead of Python's two lines with a file name and source line."""
    from ..engine.kernel_cache import KernelCacheWarning
    from ..system import NoLockWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (KernelCacheWarning, NoLockWarning)):
            from .. import report

            report.show_warning(str(message))
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield
