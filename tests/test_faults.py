"""Faults injected into fit: kill -9, signals at every phase, a full disk, two writers, --force.

After each, the run folder must hold the complete old run or the complete new one (predict
gives the matching output), or a checkpoint whose printed resume command, run as printed,
completes to the bit-identical model of an uninterrupted run."""

import errno
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dltrain import artifacts, files
from dltrain.cli import app
from dltrain.data import cache as datacache

runner = CliRunner()
DRIVER = Path(__file__).with_name("fault_driver.py")
EPOCHS = 3
WRITES = EPOCHS + 4  # a checkpoint per epoch, then the run's four files
CONFIG = """name: iris
seed: {seed}
data: {{train: iris.csv, target: species, validation: 0.2}}
model: {{layers: [{{units: 8, activation: relu}}]}}
optimizer: {{name: adam, lr: 0.01}}
train: {{epochs: {epochs}, batch_size: 16}}
"""
VISIBLE = set(artifacts.RUN_FILES) | {artifacts.CHECKPOINT}


def dltrain(cwd, *args, fault=None, timeout=120):
    """Run the command line in a child process (with a fault from tests/fault_driver.py)."""
    command = [sys.executable, str(DRIVER)] if fault else [sys.executable, "-m", "dltrain"]
    env = dict(os.environ, DLTRAIN_FAULT=fault or "")
    return subprocess.run(
        command + [str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def run_printed(cwd, message):
    """Run the resume command a message printed, exactly as printed."""
    match = re.search(r"(dltrain fit .*--resume.*?)$", message, re.MULTILINE)
    assert match, message
    argv = shlex.split(match.group(1))
    result = subprocess.run(
        [sys.executable, "-m", "dltrain", *argv[1:], "--quiet"], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result


def predictions(cwd, run):
    result = runner.invoke(app, ["predict", str(Path(cwd) / run), str(Path(cwd) / "iris.csv")])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A folder with the data, a config, and the uninterrupted reference runs: seed 1 and seed 2."""
    folder = tmp_path_factory.mktemp("faults")
    shutil.copy(Path(__file__).parents[1] / "data" / "iris.csv", folder / "iris.csv")
    (folder / "c.yaml").write_text(CONFIG.format(seed=1, epochs=EPOCHS))
    for seed in (1, 2):
        assert (
            dltrain(
                folder, "fit", "c.yaml", "--out", f"reference-{seed}", "--set", f"seed={seed}", "--quiet"
            ).returncode
            == 0
        )
    return folder


def reference(project, seed=1):
    return (project / f"reference-{seed}" / "model.npz").read_bytes(), predictions(project, f"reference-{seed}")


def assert_tidy(folder: Path):
    """Only run files are visible; dltrain's own hidden leftovers are the lock and temporaries."""
    assert {entry.name for entry in folder.iterdir() if not entry.name.startswith(".")} <= VISIBLE
    assert not [
        entry
        for entry in folder.parent.iterdir()
        if ".staging-" in entry.name and not (folder.parent / entry.name.split(".staging-")[0][1:]).exists()
    ]


def settle_fresh(project, run, outcome_text):
    """A fresh fit was cut short: it left nothing, the finished run, or a resumable checkpoint."""
    folder = project / run
    expected_bytes, expected_predictions = reference(project)
    if not folder.exists() or not (folder / artifacts.CHECKPOINT).exists() and not (folder / "model.json").exists():
        assert not folder.exists() or not [e for e in folder.iterdir() if not e.name.startswith(".")]
        return "nothing"
    assert_tidy(folder)
    if (folder / "model.json").exists():
        if (folder / "model.npz").read_bytes() == expected_bytes:
            assert predictions(project, run) == expected_predictions
            return "finished"
        # a Ctrl-C commit: an earlier epoch's model, loadable, and the printed command finishes it
        assert predictions(project, run)[0] == 0
        run_printed(project, outcome_text)
    else:
        code, message = predictions(project, run)
        assert code == 2 and "holds no finished model, only a training checkpoint" in message, message
        run_printed(project, message)
    assert (folder / "model.npz").read_bytes() == expected_bytes
    assert predictions(project, run) == expected_predictions
    return "resumed"


def test_kill_9_at_every_write_of_a_fresh_fit(project):
    outcomes = set()
    for write in range(1, WRITES + 1):
        run = f"fresh-{write}"
        result = dltrain(project, "fit", "c.yaml", "--out", run, "--quiet", fault=f"kill-write:{write}")
        assert result.returncode == -signal.SIGKILL, result.stderr
        outcomes.add(settle_fresh(project, run, result.stderr))
    assert outcomes == {"resumed", "nothing"} or outcomes == {"resumed"}, outcomes


@pytest.mark.parametrize("when", ["before", "after"])
def test_kill_9_around_the_exchange(project, when):
    run = f"exchange-{when}"
    result = dltrain(project, "fit", "c.yaml", "--out", run, "--quiet", fault=f"kill-exchange:{when}")
    assert result.returncode == -signal.SIGKILL
    assert settle_fresh(project, run, result.stderr) == ("resumed" if when == "before" else "finished")


def test_kill_9_at_every_write_of_a_forced_replacement_leaves_old_or_new(project):
    old_bytes, old_predictions = reference(project, 1)
    new_bytes, new_predictions = reference(project, 2)
    seen = set()
    faults = [f"kill-write:{write}" for write in range(1, WRITES + 1)] + ["kill-exchange:before", "kill-exchange:after"]
    for index, fault in enumerate(faults):
        run = f"force-{index}"
        shutil.copytree(project / "reference-1", project / run)
        result = dltrain(project, "fit", "c.yaml", "--out", run, "--force", "--set", "seed=2", "--quiet", fault=fault)
        assert result.returncode == -signal.SIGKILL
        assert_tidy(project / run)
        state = predictions(project, run)
        assert state in (old_predictions, new_predictions)
        seen.add("old" if state == old_predictions else "new")
        model = (project / run / "model.npz").read_bytes()
        assert model == (old_bytes if state == old_predictions else new_bytes)
        # the lock of the killed process is taken over at once
        again = dltrain(project, "fit", "c.yaml", "--out", run, "--force", "--set", "seed=2", "--quiet")
        assert again.returncode == 0, again.stderr
        assert (project / run / "model.npz").read_bytes() == new_bytes
    assert seen == {"old", "new"}


def test_kill_9_at_seeded_random_moments(project):
    (project / "long.yaml").write_text(CONFIG.format(seed=1, epochs=60))
    assert dltrain(project, "fit", "long.yaml", "--out", "long-reference", "--quiet").returncode == 0
    expected = (project / "long-reference" / "model.npz").read_bytes()
    chooser = random.Random(20261127)
    for attempt in range(4):
        run = project / f"random-{attempt}"
        process = subprocess.Popen(
            [sys.executable, "-m", "dltrain", "fit", "long.yaml", "--out", run.name, "--quiet"],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(chooser.uniform(0.3, 1.2))
        process.kill()
        process.wait(timeout=60)
        if process.returncode == 0:
            continue  # finished before the kill
        if not (run / artifacts.CHECKPOINT).exists():
            continue  # killed before the first epoch: nothing to keep
        code, message = predictions(project, run.name)
        if code == 2:
            assert "only a training checkpoint" in message
            run_printed(project, message)
        assert (run / "model.npz").read_bytes() == expected


@pytest.mark.parametrize(
    "number, phase",
    [
        (signal.SIGINT, "epoch2"),
        (signal.SIGTERM, "epoch2"),
        (signal.SIGHUP, "epoch2"),
        (signal.SIGTERM, "data"),
        (signal.SIGINT, "evaluate"),
        (signal.SIGTERM, "evaluate"),
    ],
)
def test_signals_at_every_phase(project, number, phase):
    run = f"signal-{int(number)}-{phase}"
    result = dltrain(project, "fit", "c.yaml", "--out", run, "--quiet", fault=f"signal-phase:{int(number)}:{phase}")
    assert result.returncode == 128 + number, result.stderr
    assert "Traceback" not in result.stderr and "interrupted" in result.stderr
    if phase == "data":
        assert not (project / run).exists()  # nothing was trained, and the folder it made is gone
        return
    if phase == "epoch2":  # the last finished epoch is a loadable run
        assert predictions(project, run)[0] == 0
        assert "holds the model after epoch 1; resume with: dltrain fit c.yaml --out" in result.stderr
    assert settle_fresh(project, run, result.stderr) == "resumed"


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_the_save_waits_for_the_commit(project, number):
    run = f"save-signal-{int(number)}"
    result = dltrain(
        project, "fit", "c.yaml", "--out", run, "--quiet", fault=f"signal-write:{int(number)}:{EPOCHS + 2}"
    )
    assert result.returncode == 128 + number, result.stderr
    assert "interrupted after saving" in result.stderr
    assert settle_fresh(project, run, result.stderr) == "finished"


def test_a_signal_while_an_epoch_is_saved_names_the_last_epoch_printed(project):
    """The signal arrives while epoch 2's checkpoint is written: it waits until epoch 2's line is
    printed too (it once named epoch 2 after printing only epoch 1)."""
    run = "signal-in-checkpoint"
    result = dltrain(project, "fit", "c.yaml", "--out", run, fault=f"signal-write:{int(signal.SIGINT)}:2")
    assert result.returncode == 130, result.stderr
    printed = re.findall(r"^epoch (\d+)/", result.stdout, re.MULTILINE)
    named = re.search(r"holds the model after epoch (\d+);", result.stderr)
    assert named and printed and printed[-1] == named.group(1) == "2", (result.stdout, result.stderr)
    assert len((project / run / "history.csv").read_text().splitlines()) == 1 + 2


def test_printed_resume_command_repeats_the_overrides(project):
    run = "overrides"
    result = dltrain(
        project,
        "fit",
        "c.yaml",
        "--out",
        run,
        "--set",
        "seed=2",
        "--set",
        "model.layers[0].units=8",
        fault=f"signal-phase:{int(signal.SIGINT)}:epoch2",
    )
    assert result.returncode == 130
    assert "--set seed=2 --set 'model.layers[0].units=8'" in result.stderr
    run_printed(project, result.stderr)
    assert (project / run / "model.npz").read_bytes() == reference(project, 2)[0]


class FullDisk:
    """Writes fail with ``code`` from the Nth on."""

    def __init__(self, monkeypatch, at, code=errno.ENOSPC):
        self.count, self.at, self.code = 0, at, code
        monkeypatch.setattr(files, "write_all", self)

    def __call__(self, handle, payload):
        self.count += 1
        if self.count >= self.at:
            raise OSError(self.code, os.strerror(self.code))
        handle.write(payload)


@pytest.mark.parametrize(
    "code, words", [(errno.ENOSPC, "no space left on the device"), (errno.EFBIG, "the file size limit was reached")]
)
def test_full_disk_during_a_resume_keeps_the_good_run(project, monkeypatch, code, words):
    _, old_predictions = reference(project, 1)
    for at in range(1, EPOCHS + 5):
        run = project / f"disk-{code}-{at}"
        shutil.copytree(project / "reference-1", run)
        FullDisk(monkeypatch, at, code)
        result = runner.invoke(
            app,
            [
                "fit",
                str(project / "c.yaml"),
                "--out",
                str(run),
                "--resume",
                "--quiet",
                "--set",
                f"train.epochs={EPOCHS * 2}",
            ],
        )
        monkeypatch.undo()
        assert result.exit_code == 1, result.output
        assert words in result.output and "Traceback" not in result.output
        assert predictions(project, run.name) == old_predictions
        assert_tidy(run)


def test_full_disk_in_a_fresh_fit_is_one_message(project, monkeypatch):
    for at in (1, 2, EPOCHS + 2):
        run = project / f"fresh-disk-{at}"
        FullDisk(monkeypatch, at)
        result = runner.invoke(app, ["fit", str(project / "c.yaml"), "--out", str(run), "--quiet"])
        monkeypatch.undo()
        assert result.exit_code == 1 and "no space left on the device" in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        if at > 1:  # a checkpoint exists: the hint says how to go on
            hint = result.output.splitlines()[-1]
            assert hint.startswith(("hint: training stopped; continue later", "hint: training finished but")), hint
            assert f": dltrain fit {project / 'c.yaml'} --out {run} --resume" in hint


def test_two_fits_into_one_folder(project):
    (project / "slow.yaml").write_text(CONFIG.format(seed=1, epochs=400))
    first = subprocess.Popen(
        [sys.executable, "-m", "dltrain", "fit", "slow.yaml", "--out", "busy", "--quiet"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (project / "busy" / artifacts.CHECKPOINT).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    second = dltrain(project, "fit", "c.yaml", "--out", "busy", "--force", "--quiet")
    assert second.returncode == 2
    assert f"busy: in use by another dltrain fit (process {first.pid})" in second.stderr
    first.communicate(timeout=120)
    assert first.returncode == 0
    assert predictions(project, "busy")[0] == 0


def test_two_fits_started_together_never_both_write(project):
    for attempt in range(3):
        run = f"race-{attempt}"
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "dltrain", "fit", "c.yaml", "--out", run, "--quiet"],
                cwd=project,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        codes = sorted(process.wait(timeout=120) for process in processes)
        assert codes == [0, 2]


def test_force_with_a_diverging_run_keeps_the_old_run(project):
    run = project / "diverging"
    shutil.copytree(project / "reference-1", run)
    result = dltrain(
        project, "fit", "c.yaml", "--out", run.name, "--force", "--quiet", "--set", "optimizer={name: sgd, lr: 1.0e+30}"
    )
    assert result.returncode == 3
    assert result.stderr.splitlines()[-1] == f"hint: {run.name} still holds the previous run, unchanged"
    assert predictions(project, run.name) == reference(project, 1)[1]
    assert_tidy(run)


def test_divergence_in_the_first_epoch_leaves_no_empty_folder(project):
    result = dltrain(
        project, "fit", "c.yaml", "--out", "diverged-early", "--quiet", "--set", "optimizer={name: sgd, lr: 1.0e+30}"
    )
    assert result.returncode == 3 and result.stderr.splitlines()[-1] == "hint: nothing was saved"
    assert not (project / "diverged-early").exists()


def test_out_holding_other_files_is_refused_with_or_without_force(project):
    folder = project / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    for extra in ([], ["--force"]):
        result = runner.invoke(app, ["fit", str(project / "c.yaml"), "--out", str(folder), "--quiet", *extra])
        assert result.exit_code == 2
        assert "holds files that are not part of a dltrain run (notes.txt)" in result.output
    assert (folder / "notes.txt").read_text() == "keep me" and not (folder / ".lock").exists()


def test_config_inside_out_is_refused_and_kept(project):
    folder = project / "exp"
    shutil.copytree(project / "reference-1", folder)
    config = folder / "config.yaml"
    config.write_text("# my comments\n" + CONFIG.format(seed=1, epochs=EPOCHS).replace("iris.csv", "../iris.csv"))
    before = config.read_text()
    for extra in ([], ["--force"]):
        result = runner.invoke(app, ["fit", str(config), "--out", str(folder), "--quiet", *extra])
        assert result.exit_code == 2
        assert "is inside --out" in result.output
    assert config.read_text() == before


def test_predict_never_overwrites_its_input_or_a_run(project):
    data = project / "iris.csv"
    before = data.read_bytes()
    result = runner.invoke(app, ["predict", str(project / "reference-1"), str(data), "--out", str(data)])
    assert result.exit_code == 2 and "is the input" in result.output
    assert data.read_bytes() == before
    target = project / "reference-1" / "model.npz"
    model = target.read_bytes()
    result = runner.invoke(app, ["predict", str(project / "reference-1"), str(data), "--out", str(target)])
    assert result.exit_code == 2 and "inside a run folder" in result.output
    assert target.read_bytes() == model


def test_resume_of_an_early_stopped_run_is_refused_and_says_how_to_go_on(project):
    run = project / "stopped"
    stops_early = (
        "--set",
        "train.epochs=300",
        "--set",
        "train.early_stopping={patience: 2}",
        "--set",
        "optimizer.lr=0.2",
    )
    result = dltrain(project, "fit", "c.yaml", "--out", run.name, "--quiet", *stops_early)
    assert result.returncode == 0, result.stderr
    model = (run / "model.npz").read_bytes()
    epochs_done = len((run / "history.csv").read_text().splitlines()) - 1
    assert epochs_done < 300
    for _ in range(2):  # the same answer every time, and the model untouched
        again = dltrain(project, "fit", "c.yaml", "--out", run.name, "--resume", "--quiet", *stops_early)
        assert again.returncode == 2
        assert f"already finished (early stop at epoch {epochs_done})" in again.stderr
        assert (run / "model.npz").read_bytes() == model
    run_printed(project, again.stderr)  # its suggestion trains on
    assert len((run / "history.csv").read_text().splitlines()) - 1 > epochs_done


def test_resume_on_changed_data_is_refused(project):
    folder = project / "changing"
    folder.mkdir()
    shutil.copy(project / "iris.csv", folder / "iris.csv")
    (folder / "c.yaml").write_text(CONFIG.format(seed=1, epochs=EPOCHS))
    assert dltrain(folder, "fit", "c.yaml", "--out", "run", "--quiet").returncode == 0
    lines = (folder / "iris.csv").read_text().splitlines()
    edits = {
        "a value": [lines[0]] + [lines[1].replace("5.1", "5.2", 1)] + lines[2:],
        "a column": [lines[0] + ",extra"] + [line + ",1" for line in lines[1:]],
    }
    for what, changed in edits.items():
        (folder / "iris.csv").write_text("\n".join(changed) + "\n")
        result = dltrain(folder, "fit", "c.yaml", "--out", "run", "--resume", "--quiet", "--set", "train.epochs=6")
        assert result.returncode == 2, what
        assert "iris.csv: data.train changed since the checkpoint" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_a_stale_cache_that_cannot_be_written_falls_back_to_parsing(project, monkeypatch):
    folder = project / "cached"
    folder.mkdir()
    shutil.copy(project / "iris.csv", folder / "iris.csv")
    (folder / "c.yaml").write_text(CONFIG.format(seed=1, epochs=1))
    monkeypatch.setattr(datacache, "MIN_BYTES", 0)
    assert runner.invoke(app, ["check", str(folder / "c.yaml")]).exit_code == 0
    assert list((folder / ".dltrain-cache").glob("*.json"))
    os.utime(folder / "iris.csv")  # the entry is now stale: its fingerprint must be checked and rewritten

    def read_only(path, *args, **kwargs):
        raise files.disk_error(PermissionError(errno.EACCES, "Permission denied"), path)

    monkeypatch.setattr(datacache, "atomic_write", read_only)
    result = runner.invoke(app, ["fit", str(folder / "c.yaml"), "--out", str(folder / "run"), "--quiet"])
    assert result.exit_code == 0, result.output


def test_an_out_that_cannot_be_made_is_one_message(project, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    cases = {
        str(tmp_path / "a-file" / "run"): "a part of the path is a file, not a folder",
        str(tmp_path / ("x" * 300)): "the name is too long",
    }
    for out, words in cases.items():
        result = runner.invoke(app, ["fit", str(project / "c.yaml"), "--out", out, "--quiet"])
        assert result.exit_code == 2 and words in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("")
    result = runner.invoke(app, ["fit", str(project / "c.yaml"), "--quiet"])
    assert result.exit_code == 2 and "runs: exists and is not a folder" in result.output


def test_disk_errors_name_the_path_and_the_fix():
    path = Path("somewhere") / "model.npz"
    for code, words, exit_code in (
        (errno.EROFS, "read-only", 2),
        (errno.EACCES, "permission denied", 2),
        (errno.ENOSPC, "no space left", 1),
        (errno.EDQUOT, "quota", 1),
    ):
        error = files.disk_error(OSError(code, os.strerror(code)), path)
        assert str(error).startswith(f"{path}: cannot write: ") and words in str(error)
        assert error.exit_code == exit_code


def test_a_reader_never_mixes_two_commits(project):
    """eval/predict read the folder while fits commit into it: every read is one whole run."""
    import threading

    folder = project / "alternating"
    shutil.copytree(project / "reference-1", folder)
    runs = [
        {name: (project / f"reference-{seed}" / name).read_bytes() for name in artifacts.RUN_FILES} for seed in (1, 2)
    ]
    lock = artifacts.RunLock(folder).acquire()
    failures, done = [], threading.Event()

    def read():
        while not done.is_set():
            try:
                artifacts.read_run(folder)
            except Exception as error:  # noqa: BLE001 - any failure is the finding
                failures.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for index in range(60):
            artifacts.commit_run(folder, runs[index % 2], lock)
    finally:
        done.set()
        reader.join()
        lock.release()
    assert failures == []
    assert (folder / "model.npz").read_bytes() == runs[1]["model.npz"]
