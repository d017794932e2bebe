"""Everything the user sees: rich progress and tables on a terminal, plain lines otherwise.

The only importer of rich. One job a module: console.py (the consoles, plain-text tables, the
one-line error, warning and note), progress.py (a fit's epochs and a CSV's reading as they go),
tables.py (the tables several commands print), evaluation.py (``dltrain eval``'s tables and
JSON), fit.py (after a fit: its summary, ``--cv``'s folds), tune.py (a search's trial lines and
summary). The names the commands use are here.
"""

from .console import (
    Table,
    console,
    error_console,
    log_line,
    output_encoding,
    show_error,
    show_note,
    show_warning,
    stdout_gone,
    write_bytes,
    write_text,
)
from .evaluation import confusion_table, evaluation_json, evaluation_report, per_class_table, per_target_table
from .fit import cross_validation_heading, cross_validation_line, cross_validation_table, fit_summary, sparkline
from .progress import ReadProgress, TrainingReporter, reading
from .tables import importance_table, metrics_table, scalar_table, summary_table
from .tune import tune_summary, tune_trial_line

__all__ = [
    "ReadProgress",
    "Table",
    "TrainingReporter",
    "confusion_table",
    "console",
    "cross_validation_heading",
    "cross_validation_line",
    "cross_validation_table",
    "error_console",
    "evaluation_json",
    "evaluation_report",
    "fit_summary",
    "importance_table",
    "log_line",
    "metrics_table",
    "output_encoding",
    "per_class_table",
    "per_target_table",
    "reading",
    "scalar_table",
    "show_error",
    "show_note",
    "show_warning",
    "sparkline",
    "summary_table",
    "tune_summary",
    "tune_trial_line",
    "stdout_gone",
    "write_bytes",
    "write_text",
]
