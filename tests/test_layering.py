"""The dependency rules of the package layout, checked on the source: the engine imports
nothing of dltrain outside engine/; only the command line (cli/) imports typer; only report/
imports rich."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dltrain"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> list[tuple[str, int]]:
    """Absolute module names imported by ``path`` (relative imports resolved), with their level."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                names += [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
            else:
                names.append(node.module)
    return names


def test_the_scan_sees_the_package():
    names = {path.relative_to(PACKAGE).as_posix() for path in MODULES}
    assert {"cli/__init__.py", "cli/app.py", "report/__init__.py", "engine/model.py", "engine/kernels.py"} <= names
    assert "dltrain.engine.backend" in _imports(PACKAGE / "engine" / "model.py")


@pytest.mark.parametrize("path", [p for p in MODULES if p.parent.name == "engine"], ids=lambda p: p.name)
def test_engine_imports_nothing_of_dltrain_outside_engine(path):
    outside = [
        name for name in _imports(path) if name.split(".")[0] == "dltrain" and not name.startswith("dltrain.engine")
    ]
    assert outside == [], f"{path.name} imports {outside}"


@pytest.mark.parametrize("library, face", [("typer", "cli/"), ("rich", "report/")])
def test_only_the_face_imports_the_ui_libraries(library, face):
    """The face is a module or a package (cli/, report/): the library is imported there and
    nowhere else."""
    importers = sorted(
        path.relative_to(PACKAGE).as_posix()
        for path in MODULES
        if any(name.split(".")[0] == library for name in _imports(path))
    )
    assert importers, f"the scan sees no import of {library}"
    assert [name for name in importers if not (name == face or face.endswith("/") and name.startswith(face))] == []


@pytest.mark.parametrize(
    "path", [p for p in MODULES if p.parent.name == "engine" and p.name != "backend.py"], ids=lambda p: p.name
)
def test_only_backend_names_the_array_library(path):
    """The seam for another array library: numpy is imported and used as ``np`` in backend.py only."""
    source = path.read_text(encoding="utf-8")
    assert "numpy" not in _imports(path) and not any(name.startswith("numpy.") for name in _imports(path))
    assert "np." not in source


# Dependencies point down: a module imports only from its own layer or the layers below it.
LAYERS = [
    ("engine",),  # the NumPy engine
    # what differs between systems; errors a user can cause, safe files, label spelling, metrics, the stop
    # signals, stored formats
    ("system", "errors", "labels", "files", "metrics", "signals", "stored"),
    ("config",),  # specs, YAML with positions, --set
    ("data",),  # CSV -> typed columns -> arrays
    ("train", "batches", "artifacts", "run_folder", "checkpoints"),  # the loop; the run folder; checkpoints
    # model and trainer; K-fold cross-validation; resuming a fit; one fit into a run folder; predictions
    # (and their CSV text); the metrics of a labelled CSV
    ("build", "crossval", "resume", "fit_session", "predictions", "csv_text", "evaluation"),
    ("tune",),  # the search: space, storage, liveness, workers, the study folder
    ("api",),  # the Python API: fit, load, Run
    ("commands",),  # one module per command
    ("cli", "report", "plot", "__main__"),  # the face
]


def _layer(module: str) -> int:
    """The layer of ``dltrain.x.y`` (the package's own __init__ sits with the engine set-up it does)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top in ("__init__", "__version__"):
        return 0
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module} is in no layer; add it to LAYERS")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


# The package's __init__ hands out the public API (dltrain.fit, dltrain.load, ...), imported on first use.
PUBLIC_API = ("dltrain.api", "dltrain.predictions")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_dependencies_point_down(path):
    own = _layer(_module_name(path))
    allowed = PUBLIC_API if path == PACKAGE / "__init__.py" else ()
    upward = [
        name
        for name in _imports(path)
        if name.split(".")[0] == "dltrain" and name != "dltrain" and _layer(name) > own and name not in allowed
    ]
    assert upward == [], f"{_module_name(path)} (layer {own}) imports {upward} from a layer above"


def test_the_api_sits_between_the_run_folder_and_the_commands():
    """data.prepare inside data; build below the API; the API above train and artifacts, below commands."""
    assert _layer("dltrain.data.prepare") == _layer("dltrain.data")
    assert _layer("dltrain.train") < _layer("dltrain.build") < _layer("dltrain.api") < _layer("dltrain.commands")
    assert _layer("dltrain.artifacts") < _layer("dltrain.fit_session") < _layer("dltrain.api")
    assert {"dltrain.build", "dltrain.predictions", "dltrain.fit_session"} <= set(_imports(PACKAGE / "api.py"))
    assert "dltrain.api" in _imports(PACKAGE / "commands" / "predict.py")


def test_the_named_rules_hold():
    """The issue's words: data never imports commands, cli or report; config does not import data."""
    for path in MODULES:
        name, imported = _module_name(path), _imports(path)
        if name.startswith("dltrain.data"):
            assert not [m for m in imported if m.startswith(("dltrain.commands", "dltrain.cli", "dltrain.report"))]
        if name == "dltrain.config" or name.startswith("dltrain.config."):
            assert not [m for m in imported if m.startswith("dltrain.data")]


TUNE_MODULES = [
    p for p in MODULES if p.parent.name == "tune" or p.relative_to(PACKAGE).as_posix() == "commands/tune.py"
]


def _private_imports(path: Path) -> list[str]:
    """``from x import _name`` in ``path``: a name another module keeps to itself."""
    return [
        f"{node.module}.{alias.name}"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]


def _private_attributes(path: Path) -> list[str]:
    """``thing._name`` (not ``self._name``): another object's private attribute, or a private module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(node.attr)
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [part for part in node.module.split(".") if part.startswith("_") and not part.startswith("__")]
    return found


def test_the_scan_sees_the_tune_package():
    names = {path.relative_to(PACKAGE).as_posix() for path in TUNE_MODULES}
    assert {"tune/space.py", "tune/storage.py", "tune/liveness.py", "tune/worker.py", "tune/study_folder.py"} <= names
    assert "_storage" in _private_attributes(PACKAGE / "tune" / "storage.py")


@pytest.mark.parametrize("path", TUNE_MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_tune_imports_no_private_name_of_another_module(path):
    assert _private_imports(path) == []


@pytest.mark.parametrize(
    "path", [p for p in TUNE_MODULES if p.name != "storage.py"], ids=lambda p: p.relative_to(PACKAGE).as_posix()
)
def test_only_the_storage_module_touches_optunas_private_parts(path):
    """Optuna's private attributes and modules (``study._storage``, ``trial._trial_id``, its journal
    backend's ``_lock``) and its version differences are kept in tune/storage.py."""
    source = path.read_text(encoding="utf-8")
    assert _private_attributes(path) == []
    assert "hasattr(optuna" not in source and "__version__" not in source


def _private_names_of_other_modules(path: Path) -> list[str]:
    """``from .x import _name`` and ``x._name`` (x a dltrain module) in ``path``: a name another
    module of dltrain keeps to itself, used across the boundary."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    ours = {}  # local name -> what of dltrain it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "dltrain"):
            found += [
                alias.name for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")
            ]
            ours.update({alias.asname or alias.name: alias.name for alias in node.names})
        elif isinstance(node, ast.Import):
            ours.update(
                {alias.asname or alias.name: alias.name for alias in node.names if alias.name.startswith("dltrain")}
            )
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in ours
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_the_private_name_scan_finds_both_forms(tmp_path):
    module = tmp_path / "dltrain" / "x.py"
    module.parent.mkdir()
    module.write_text("import os\nfrom .files import _UMASK, UMASK\nfrom . import files\nfiles._fsync(os._exit)\n")
    assert _private_names_of_other_modules(module) == ["_UMASK", "files._fsync"]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_module_uses_a_private_name_of_another(path):
    """A name that starts with _ is its module's own: what another module needs is public, said so
    by its name (and its docstring)."""
    assert _private_names_of_other_modules(path) == []
