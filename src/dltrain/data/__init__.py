"""CSV files to model-ready arrays, one way: read (csv, cache), plan (what the config asks),
type and fit each column (columns, with dates; encoding: how a column becomes inputs), store the
fitted preprocessing (schema; statistics.py fits its scaling), read other files as training did
(rows), split (split); prepare.py runs the whole step for a config in one call (``prepare_data``).

The package imports nothing of dltrain but the engine's loss rules, errors, files, labels, the
stored-format base (stored) and the config; it never prints."""

from .cells import MISSING_TOKENS
from .checks import checked_rows
from .columns import BOOLEAN_WORDS, MAX_CATEGORIES, column_encodings
from .csv import CsvFile
from .dialect import DELIMITER_NAMES, DELIMITERS
from .encoding import ColumnEncoding
from .parsed import Columns
from .plan import ColumnOptions, DataPlan, infer_task, plan_data, target_labels
from .rows import FeatureRows, LabelledRows, read_features, read_labelled, read_rows
from .schema import DataSchema
from .split import Split, stratified_split
from .targets import infer_target_task

__all__ = [
    "BOOLEAN_WORDS",
    "MAX_CATEGORIES",
    "ColumnEncoding",
    "checked_rows",
    "column_encodings",
    "DELIMITER_NAMES",
    "DELIMITERS",
    "MISSING_TOKENS",
    "Columns",
    "CsvFile",
    "ColumnOptions",
    "DataPlan",
    "infer_target_task",
    "infer_task",
    "plan_data",
    "target_labels",
    "DataSchema",
    "FeatureRows",
    "read_features",
    "read_rows",
    "LabelledRows",
    "read_labelled",
    "Split",
    "stratified_split",
]
