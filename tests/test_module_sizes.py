"""The size rule: a module a newcomer reads in one sitting (at most 500 lines), a function that fits
on a screen (at most 60, decorators and docstring included), so that each piece has one job and
a name that says it. The exceptions are listed below, each with why; a new one needs its reason
written here, and an entry can go once its module or function is back under the limit."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dltrain"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60

LONG_MODULES: dict[str, str] = {}
LONG_FUNCTIONS = {
    "data/fastrecords.py:_parse_records": "a numba kernel: one pass over the bytes, its length is the loop",
    "data/fastnumbers.py:parse_number": "a numba kernel: a number's grammar (sign, digits, point, exponent), one pass",
}


def _name(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def function_lengths(source: str) -> dict[str, int]:
    """Lines of each function and method (``Class.method``; a nested one under its own name),
    from its first decorator to its last line."""
    lengths = {}

    def visit(node, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([decorator.lineno for decorator in child.decorator_list] + [child.lineno])
                assert child.end_lineno is not None
                lengths[prefix + child.name] = child.end_lineno - start + 1
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return lengths


def test_the_scan_counts_functions_and_methods_with_their_decorators():
    source = "@wrap\ndef f():\n    x = 1\n\n    return x\n\n\n"
    source += "class A:\n    def g(self):\n        def h():\n            pass\n"
    assert function_lengths(source) == {"f": 5, "A.g": 3, "A.g.h": 2}


def test_no_module_is_over_500_lines():
    long = {}
    for path in MODULES:
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES and _name(path) not in LONG_MODULES:
            long[_name(path)] = lines
    assert long == {}, f"give a job of each a module of its own (lines): {long}"


def test_no_function_is_over_60_lines():
    long = {}
    for path in MODULES:
        for name, lines in function_lengths(path.read_text(encoding="utf-8")).items():
            if lines > MAX_FUNCTION_LINES and f"{_name(path)}:{name}" not in LONG_FUNCTIONS:
                long[f"{_name(path)}:{name}"] = lines
    assert long == {}, f"split each into named pieces (lines): {long}"
