"""`dltrain fit`: train the run a config describes (``api.fit``) and hand back how it went."""

from ..api import fit as fit_run
from ..fit_session import FitResult
from ..train import Callbacks


def fit(
    config_path,
    overrides=(),
    out=None,
    force=False,
    callbacks: Callbacks | None = None,
    on_run_dir=None,
    resume=False,
    command_line=None,
    cv: int | None = None,
    on_fold=None,
    device=None,
) -> FitResult:
    """Train from a config file and commit the run folder; returns where and how it went.

    With ``resume``, continue the checkpoint in ``out`` up to ``train.epochs``, bit for bit
    as if training had never stopped. ``command_line`` is recorded in model.json. ``cv``: the
    config is first cross-validated on that many folds (``on_fold(index, result)`` after each)."""
    run = fit_run(
        config_path,
        out,
        list(overrides),
        force=force,
        resume=resume,
        callbacks=callbacks,
        on_run_dir=on_run_dir,
        command_line=command_line,
        cv=cv,
        on_fold=on_fold,
        device=device,
    )
    assert run.fit_result is not None
    return run.fit_result
