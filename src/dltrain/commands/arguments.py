"""What the commands check of their arguments before any work (the DLTRAIN_* variables are
environment.py's): a run folder and a CSV given the wrong way round. Nothing here prints."""

from pathlib import Path

from ..errors import ArtifactError


def check_argument_order(command: str, run_dir, data_path):
    """``dltrain predict data.csv runs/x``: the two arguments are swapped; say so."""
    run_dir, data_path = Path(run_dir), Path(data_path)
    if run_dir.is_file():
        if data_path.is_dir():
            raise ArtifactError(
                f"the arguments are swapped: {run_dir} is a file and {data_path} a folder; "
                f"write: dltrain {command} {data_path} {run_dir}"
            )
        raise ArtifactError(
            f"{run_dir}: is a file, not a run folder; the run folder comes first: dltrain {command} RUN_DIR DATA.csv"
        )
