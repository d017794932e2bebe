"""The compiled-kernel cache cannot crash or mislead a fit, and the DLTRAIN_* variables are checked.

A kernel cache that cannot be written, or a damaged cache file, costs a compilation and at
most one warning line; a DLTRAIN_KERNELS or DLTRAIN_CACHE_DIR that dltrain cannot use is one
message naming it (exit code 2), never a setting silently ignored."""

from __future__ import annotations

import errno
import re
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from dltrain.cli import app
from dltrain.data import cache as data_cache
from dltrain.engine import kernel_cache, kernel_loops, kernels, threads

runner = CliRunner()
needs_numba = pytest.mark.skipif(not kernels.active(), reason="numba not installed: only the reference path runs")


@pytest.fixture
def fresh_kernels(monkeypatch, tmp_path):
    """Kernels built anew in each call (not reused from this process), cached in tmp_path/numba."""
    import numba

    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "numba"))
    monkeypatch.setattr(kernel_cache, "_warned", False)

    def build():
        kernels._compiled.clear()
        kernel_cache._warned = False

    monkeypatch.setattr(kernels, "_compiled", {})
    return build


def read_only(locator):
    raise PermissionError(errno.EACCES, "Permission denied", locator.get_cache_path())


def bias_plus_relu_works() -> list[str]:
    """Run one kernel; check its result; return the KernelCacheWarnings it gave."""
    z = np.array([[1.0, -3.0, 2.0]], dtype=np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kernels.bias_activation(z, np.array([0.5, 0.5, -3.0], dtype=np.float32), relu=True)
    np.testing.assert_array_equal(z, [[1.5, 0.0, 0.0]])
    return [str(item.message) for item in caught if issubclass(item.category, kernel_cache.KernelCacheWarning)]


@needs_numba
def test_no_writable_cache_folder_compiles_in_memory_with_one_warning(fresh_kernels, monkeypatch):
    # A read-only install with XDG_CACHE_HOME and HOME files: numba finds no folder to write in
    # (as root every folder is writable, so numba's writability probe is made to fail).
    from numba.core import caching

    monkeypatch.setattr(caching._CacheLocator, "ensure_cache_path", read_only)
    fresh_kernels()
    first = bias_plus_relu_works()
    z = np.zeros((2, 2), dtype=np.float32)
    kernels.bias_activation(z, np.array([1.0, 2.0], dtype=np.float32), relu=False)  # a second kernel
    assert z.tolist() == [[1.0, 2.0], [1.0, 2.0]]
    assert len(first) == 1 and "compiled in memory" in first[0] and "NUMBA_CACHE_DIR" in first[0]


@needs_numba
def test_a_cache_folder_that_refuses_the_write_compiles_in_memory(fresh_kernels, monkeypatch):
    # The folder was writable when numba looked, but the save fails (read-only now, or full).
    from numba.core import caching

    def full(self, path):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(caching.IndexDataCacheFile, "_open_for_write", full)
    fresh_kernels()
    shown = bias_plus_relu_works()
    assert len(shown) == 1 and "cannot be saved" in shown[0] and "No space left" in shown[0]


@needs_numba
@pytest.mark.parametrize("damage", ["truncated index", "data bits flipped"])
def test_a_damaged_cache_file_is_compiled_again_and_replaced(fresh_kernels, tmp_path, damage):
    fresh_kernels()
    assert bias_plus_relu_works() == []  # compiled and saved
    index = next((tmp_path / "numba").rglob("*bias_relu_loop_serial*.nbi"))
    data = next((tmp_path / "numba").rglob("*bias_relu_loop_serial*.nbc"))
    target = index if "index" in damage else data
    content = bytearray(target.read_bytes())
    if "truncated" in damage:
        content = content[: len(content) // 2]  # numba's own files: UnpicklingError
    else:
        middle = len(content) // 3
        content[middle : middle + 200] = bytes(value ^ 0x55 for value in content[middle : middle + 200])  # LLVM error
    target.write_bytes(bytes(content))
    fresh_kernels()
    shown = bias_plus_relu_works()
    assert len(shown) == 1 and "damaged" in shown[0] and str(target) in shown[0]
    fresh_kernels()
    assert bias_plus_relu_works() == []  # the file was rewritten whole


@needs_numba
def test_looking_in_the_cache_holds_numbas_compiler_lock(fresh_kernels, monkeypatch):
    # Looking refreshes numba's typing context: done beside a compilation in another thread (the
    # CSV reader's, while the warm-up looked for the engine's kernels), that compilation failed
    # to type ("Unknown attribute 'shape' of type array") and the first fit crashed.
    import numba
    from numba.core.compiler_lock import global_compiler_lock

    probe = numba.njit(kernels._serial_copy(kernel_loops.bias_loop))
    assert kernel_cache.enable(probe)
    typing_context = probe.targetctx.typing_context
    refresh, locked = typing_context.refresh, []
    monkeypatch.setattr(typing_context, "refresh", lambda: locked.append(global_compiler_lock.is_locked()) or refresh())
    assert not kernel_cache.holds(probe, kernels._signature(kernel_loops.bias_loop, "float32", "int64"))
    assert locked and all(locked)


@needs_numba
def test_fit_with_an_unusable_kernel_cache_prints_one_warning_line(fresh_kernels, monkeypatch, tmp_path, root):
    from numba.core import caching

    monkeypatch.setattr(caching._CacheLocator, "ensure_cache_path", read_only)
    monkeypatch.setattr(threads, "FUSED_MIN_MACS", 1)  # iris on the fused kernels
    monkeypatch.delenv(threads.KERNELS_VARIABLE, raising=False)
    fresh_kernels()
    result = runner.invoke(
        app, ["fit", str(root / "configs" / "iris.yaml"), "--set", "train.epochs=1", "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if "kernel" in line.lower()]
    assert len(warned) == 1 and warned[0].startswith("warning: compiled kernels cannot be cached on disk")
    assert "Traceback" not in result.output and "KernelCacheWarning" not in result.output


# ---------------------------------------------------------------- the DLTRAIN_* variables


@pytest.mark.parametrize("value", ["refrence", "off", "fused"])
@pytest.mark.parametrize("command", [["--version"], ["check", "configs/iris.yaml"]])
def test_an_unknown_kernels_setting_is_an_error_naming_the_allowed_ones(value, command, monkeypatch, root):
    monkeypatch.chdir(root)
    monkeypatch.setenv(threads.KERNELS_VARIABLE, value)
    result = runner.invoke(app, command)
    assert result.exit_code == 2, result.output
    assert f"DLTRAIN_KERNELS={value}: not a setting" in result.output
    assert "auto or reference" in result.output and "Traceback" not in result.output
    if value == "refrence":
        assert "did you mean 'reference'?" in result.output


@pytest.mark.parametrize("value", ["reference", "Reference", "auto", ""])
def test_the_known_kernels_settings_are_accepted(value, monkeypatch):
    monkeypatch.setenv(threads.KERNELS_VARIABLE, value)
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert ("DLTRAIN_KERNELS=reference" in result.output) == (value.lower() == "reference")


@pytest.mark.parametrize("inside", [False, True])
def test_a_cache_folder_variable_naming_a_file_is_an_error(inside, monkeypatch, tmp_path, root):
    (tmp_path / "notes.txt").write_text("not a folder")
    value = tmp_path / "notes.txt" / "cache" if inside else tmp_path / "notes.txt"
    monkeypatch.setenv(data_cache.CACHE_ENV, str(value))
    result = runner.invoke(app, ["check", str(root / "configs" / "iris.yaml")])
    assert result.exit_code == 2, result.output
    assert f"DLTRAIN_CACHE_DIR={value}:" in result.output and "not a folder" in result.output
    assert (tmp_path / "notes.txt").read_text() == "not a folder"
    monkeypatch.setenv(data_cache.CACHE_ENV, str(tmp_path / "new" / "cache"))  # a folder still to make is fine
    assert runner.invoke(app, ["check", str(root / "configs" / "iris.yaml")]).exit_code == 0


# Every DLTRAIN_* variable the package reads, and where a value it cannot use is refused by name.
CHECKED_VARIABLES = {
    "DLTRAIN_KERNELS": "commands.environment.check_environment (tested above)",
    "DLTRAIN_CACHE_DIR": "commands.environment.check_environment (tested above)",
    "DLTRAIN_SERVE_TOKEN": "commands.serve.server.token_from_environment",
    "DLTRAIN_TUNE_HEARTBEAT": "tune.liveness",
}


def test_every_dltrain_variable_the_package_reads_is_one_that_is_checked(root):
    # A new variable must come with a check that names it (and a line here saying where).
    source = "\n".join(path.read_text(encoding="utf-8") for path in (root / "src" / "dltrain").rglob("*.py"))
    read = set(re.findall(r"\bDLTRAIN_[A-Z][A-Z_]*", source))
    assert {"DLTRAIN_KERNELS", "DLTRAIN_CACHE_DIR"} <= read and read <= set(CHECKED_VARIABLES), read
