"""dltrain where Linux's extras are missing (system.py): no fcntl, no renameat2, no /proc, no folder
descriptors. Every module imports, and a fit, a forced refit and a prediction run through the
fallbacks, in a child process where those are hidden as on Windows (flock) and macOS (/proc).
The commit's fallback (two renames) is also checked against a failure between its moves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dltrain import artifacts, system
from dltrain.cli import app
from dltrain.errors import StorageError

ROOT = Path(__file__).resolve().parents[1]

_WITHOUT_LINUX = r"""
import builtins, ctypes, importlib, io, json, os, pkgutil, sys, warnings

class HiddenFcntl:
    def find_spec(self, name, path=None, target=None):
        if name == "fcntl":
            raise ModuleNotFoundError("No module named 'fcntl'", name="fcntl")
        return None

assert "fcntl" not in sys.modules
sys.meta_path.insert(0, HiddenFcntl())

class LibcWithoutExchange(ctypes.CDLL):
    def __getattr__(self, name):
        if name in ("renameat2", "renamex_np"):
            raise AttributeError(name)
        return super().__getattr__(name)

ctypes.CDLL = LibcWithoutExchange
real_open = io.open

def opener():  # the module that opens a file (through pathlib or not)
    frame = sys._getframe(2)
    while frame.f_globals.get("__name__") == "pathlib":
        frame = frame.f_back
    return frame.f_globals.get("__name__", "")

def open_without_proc(file, *args, **kwargs):
    # dltrain's readers of /proc (threadpoolctl, a dependency, keeps its own Linux path)
    if isinstance(file, (str, os.PathLike)) and os.fspath(file).startswith("/proc") and opener().startswith("dltrain"):
        raise FileNotFoundError(2, "No such file or directory", os.fspath(file))
    return real_open(file, *args, **kwargs)

builtins.open = io.open = open_without_proc
del os.O_DIRECTORY, os.fchmod, os.sched_getaffinity
os.supports_dir_fd.discard(os.open)

import dltrain
modules = [m.name for m in pkgutil.walk_packages(dltrain.__path__, "dltrain.") if m.name != "dltrain.__main__"]
for name in modules:
    importlib.import_module(name)

from dltrain import system
from dltrain.engine.threads import MachineLoad, available_cores
from dltrain.tune import liveness

exchanged = []
exchange = system.exchange
system.exchange = lambda first, second: exchanged.append(exchange(first, second)) or exchanged[-1]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    dltrain.fit("iris.yaml", out="run", overrides={"train.epochs": 2})
    dltrain.fit("iris.yaml", out="run", overrides={"train.epochs": 3}, force=True)
    predicted = dltrain.load("run").predict("iris.csv")
print(json.dumps({
    "modules": len(modules),
    "fcntl": "fcntl" in sys.modules,
    "flags": [system.CAN_LOCK, system.OPEN_FOLDERS],
    "exchanged": exchanged,
    "warnings": [str(w.message) for w in caught if w.category is system.NoLockWarning],
    "epochs": dltrain.load("run").metadata["training"]["epochs_done"],
    "labels": sorted(set(predicted.labels.tolist())),
    "rows": len(predicted),
    "memory": system.available_memory(),
    "busy": MachineLoad().other_busy_cores(),
    "cores": available_cores(),
    "worker": liveness.worker_label(),
    "alive": liveness.process_exists(os.getpid()),
}))
"""


def test_every_module_imports_and_a_fit_and_predict_run_without_linux_extras(tmp_path):
    shutil.copy(ROOT / "data" / "iris.csv", tmp_path / "iris.csv")
    (tmp_path / "iris.yaml").write_text(
        "data: {train: iris.csv, target: species}\nmodel: {layers: [{units: 4}]}\ntrain: {epochs: 2}\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_LINUX], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen["modules"] >= 60 and not seen["fcntl"]
    assert seen["flags"] == [False, False]
    assert seen["exchanged"] == [False, False]  # both commits moved the folders by renames
    assert len(seen["warnings"]) == 1 and "no file locks" in seen["warnings"][0]
    assert seen["epochs"] == 3 and seen["rows"] == 150
    assert seen["labels"] == ["setosa", "versicolor", "virginica"]
    assert seen["memory"] > 0 and seen["busy"] is None and seen["cores"] >= 1
    assert seen["worker"].endswith(":?") and seen["alive"] is True
    run = tmp_path / "run"
    assert sorted(path.name for path in run.iterdir()) == sorted(artifacts.RUN_FILES + (artifacts.CHECKPOINT,))
    assert [path.name for path in tmp_path.iterdir() if ".staging-" in path.name] == []


def _old_run(tmp_path: Path) -> Path:
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / "model.json").write_text("old")
    return directory


def test_a_failed_move_in_puts_the_old_run_back(tmp_path, monkeypatch):
    directory = _old_run(tmp_path)
    rename = os.rename

    def refuse_the_new_run(source, target):
        if Path(target) == directory and ".staging-" in Path(source).name and "previous" not in Path(source).name:
            raise OSError(28, "No space left on device")
        rename(source, target)

    monkeypatch.setattr(system, "exchange", lambda first, second: False)
    monkeypatch.setattr(os, "rename", refuse_the_new_run)
    with artifacts.RunLock(directory) as lock, pytest.raises(StorageError, match="run: cannot write: no space left"):
        artifacts.commit_run(directory, {"model.json": b"new"}, lock)
    assert (directory / "model.json").read_text() == "old"
    assert [path.name for path in tmp_path.iterdir() if path.name != "run"] == []


def test_an_old_run_moved_aside_by_a_killed_commit_is_kept(tmp_path):
    """Killed between the two moves: the run folder holds nothing, the old run is beside it."""
    aside = tmp_path / ".run.staging-previous-12345"
    aside.mkdir()
    (aside / "model.json").write_text("old")
    (tmp_path / "run").mkdir()
    with artifacts.RunLock(tmp_path / "run"):
        pass
    assert (aside / "model.json").read_text() == "old"
    (tmp_path / "run" / "model.json").write_text("new")  # a run is there again: the old one is stale
    with artifacts.RunLock(tmp_path / "run"):
        pass
    assert not aside.exists()


def test_serve_workers_need_fork(monkeypatch):
    monkeypatch.setattr(system, "CAN_FORK", False)
    result = CliRunner().invoke(app, ["serve", "runs/none", "--workers", "2"])
    assert result.exit_code == 2, result.output
    assert "--workers 2" in result.output and "cannot fork" in result.output


class _FakeKernel32:
    """Windows' kernel32 as _windows_process_running calls it: pid 1 runs, pid 2 has ended, pid 3
    is gone, pid 4 is someone else's (its process cannot even be opened)."""

    def __init__(self, name, use_last_error=False):
        self.closed = []
        self.OpenProcess = self._function(self._open)
        self.GetExitCodeProcess = self._function(self._exit_code)
        self.CloseHandle = self._function(self.closed.append)

    @staticmethod
    def _function(body):
        def call(*args):
            return body(*args)

        return call

    def _open(self, access, inherit, pid):
        assert access == 0x1000 and inherit is False
        _FakeKernel32.last_error = {3: 87, 4: 5}.get(pid, 0)
        return None if pid in (3, 4) else 100 + pid

    def _exit_code(self, handle, pointer):
        pointer._obj.value = 259 if handle == 101 else 0
        return 1


def test_windows_asks_open_process_whether_a_worker_runs(monkeypatch):
    """Not Windows itself (untested there): the calls as written, against a stand-in kernel32."""
    import ctypes

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(ctypes, "WinDLL", _FakeKernel32, raising=False)
    monkeypatch.setattr(ctypes, "get_last_error", lambda: _FakeKernel32.last_error, raising=False)
    assert [system.process_running(pid) for pid in (1, 2, 3, 4)] == [True, False, False, True]
