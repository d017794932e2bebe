"""The study folder under faults: folders that are not ours, other commands' locks, torn and
damaged journals, a FIFO, another experiment or study under the same name, secrets, dead
workers, a database that stops, bounds, an interrupted best/, damaged files for `dltrain plot`.

Tiny searches (iris, 2 epochs, 1-2 trials): each case is about what happens around the trials."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dltrain.artifacts import RunLock
from dltrain.cli import app
from dltrain.tune import credentials

optuna = pytest.importorskip("optuna", reason="the tune extra is not installed")

ROOT = Path(__file__).resolve().parents[1]
IRIS = ROOT / "data" / "iris.csv"
POSTGRES_URL = os.environ.get("DLTRAIN_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(not POSTGRES_URL, reason="DLTRAIN_TEST_POSTGRES_URL is unset")
runner = CliRunner()


def write_config(folder: Path, epochs=2, trials=1, train=IRIS, space=None, name="iris") -> Path:
    config = {
        "name": name,
        "seed": 0,
        "data": {"train": str(train), "target": "species", "validation": 0.3},
        "model": {"layers": [{"units": 4, "activation": "relu"}]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "train": {"epochs": epochs, "batch_size": 32},
        "tune": {
            "metric": "val_loss",
            "trials": trials,
            "pruner": "none",
            "space": space or {"optimizer.lr": {"low": 1e-3, "high": 0.1, "log": True}},
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def tune(*args, env=None):
    return runner.invoke(app, ["tune", *map(str, args), "--quiet"], env=env)


def journal_study(study_dir: Path, name="iris"):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(study_dir / "journal.log")))
    return optuna.load_study(study_name=name, storage=storage)


def finished(study) -> list:
    return [trial for trial in study.trials if trial.state.name in ("COMPLETE", "PRUNED")]


def one_message(result, *words):
    """Exit 2, no traceback, and every word in the output."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for word in words:
        assert word in result.output, (word, result.output)


def dltrain_process(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dltrain", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """A config and a finished one-trial study folder of it, to copy."""
    folder = tmp_path_factory.mktemp("study")
    config = write_config(folder)
    result = tune(config, "--out", folder / "study")
    assert result.exit_code == 0, result.output
    return config, folder / "study"


@pytest.fixture
def study_copy(finished_study, tmp_path):
    config, study = finished_study
    copy = tmp_path / "study"
    shutil.copytree(study, copy, symlinks=True)
    return config, copy


def snapshot(folder: Path) -> dict:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


# ---------------------------------------------------------------- one rule for every output folder


def test_an_out_holding_the_users_files_is_refused_and_left_alone(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "mywork"
    out.mkdir()
    (out / "notes.md").write_text("my notes")
    (out / "trials.csv").write_text("my,own\n1,2\n")
    result = tune(config, "--out", out)
    one_message(result, "notes.md", "not part of a dltrain study")
    assert snapshot(out) == {"notes.md": b"my notes", "trials.csv": b"my,own\n1,2\n"}


def test_a_users_file_inside_best_is_refused_too(study_copy):
    config, study = study_copy
    (study / "best" / "notes.md").write_text("keep me")
    one_message(tune(config, "--out", study, "--trials", "2"), "best/notes.md")
    assert (study / "best" / "notes.md").read_text() == "keep me"


def test_tune_fit_and_export_share_one_lock(study_copy, tmp_path):
    config, study = study_copy
    with RunLock(study, command="fit"):  # a fit writing the folder
        one_message(tune(config, "--out", study, "--trials", "2"), "in use by another dltrain fit")
    with RunLock(study, command="tune", shared=True):  # a tune writing it
        result = runner.invoke(app, ["fit", str(config), "--out", str(study), "--quiet"])
        one_message(result, "in use by another dltrain tune")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    with RunLock(study / "best", command="fit"):
        one_message(runner.invoke(app, ["export", str(study / "best")]), "in use by another dltrain fit")
    assert not (study / "best" / "model.onnx").exists()


def test_a_second_study_name_is_refused_naming_the_first(study_copy):
    config, study = study_copy
    before = snapshot(study)
    one_message(tune(config, "--out", study, "--study", "other"), "holds study 'iris'", "--study iris")
    assert snapshot(study) == before


# ---------------------------------------------------------------- the journal under faults


def test_a_torn_last_record_is_cut_away_before_any_append(study_copy):
    config, study = study_copy
    journal = study / "journal.log"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code":7,"worker_id":"x","trial_id":0,"st')  # a write cut short
    result = tune(config, "--out", study, "--trials", "2")
    assert result.exit_code == 0, result.output
    assert "last record was cut short" in result.output
    assert journal.read_bytes().startswith(whole)
    assert len(finished(journal_study(study))) == 2  # Optuna itself reads every line again


@pytest.mark.parametrize(
    "damage",
    [b"{not json\n", b'{"op_code": 99, "worker_id": "x"}\n', b"[1, 2]\n", b"\xff\xfe\n"],
    ids=["garbage", "foreign-operation", "not-an-object", "not-utf8"],
)
def test_a_damaged_record_is_refused_and_the_journal_left_untouched(study_copy, damage):
    config, study = study_copy
    journal = study / "journal.log"
    lines = journal.read_bytes().splitlines(keepends=True)
    damaged = b"".join(lines[:3] + [damage] + lines[3:])
    journal.write_bytes(damaged)
    one_message(tune(config, "--out", study, "--trials", "2"), str(journal), "line 4")
    assert journal.read_bytes() == damaged


def test_a_record_optuna_cannot_replay_is_one_message(study_copy):
    config, study = study_copy
    journal = study / "journal.log"
    journal.write_bytes(journal.read_bytes() + b'{"op_code": 6, "worker_id": "x"}\n')  # no trial_id
    one_message(tune(config, "--out", study, "--trials", "2"), str(journal), "cannot replay")


def test_a_folder_as_journal_is_one_message(study_copy):
    config, study = study_copy
    journal = study / "journal.log"
    journal.unlink()
    journal.mkdir()
    one_message(tune(config, "--out", study, "--trials", "2"), str(journal), "is a folder")


def test_a_fifo_as_journal_is_refused_without_waiting(study_copy):
    config, study = study_copy
    journal = study / "journal.log"
    journal.unlink()
    os.mkfifo(journal)
    process = dltrain_process("tune", config, "--out", study, "--trials", "2", "--quiet")
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 2, output
    assert f"{journal}: is a FIFO (named pipe)" in output and "Traceback" not in output


# ---------------------------------------------------------------- a study knows its experiment


def test_another_experiment_under_the_same_name_is_refused_naming_both(study_copy, tmp_path):
    config, study = study_copy
    other_data = tmp_path / "other" / "iris.csv"
    other_data.parent.mkdir()
    rows = IRIS.read_text().splitlines(keepends=True)
    other_data.write_text(rows[0] + "".join(reversed(rows[1:])))  # the same columns, another file
    other = write_config(tmp_path / "other", train=other_data)
    one_message(tune(other, "--out", study, "--trials", "2"), "another experiment", str(config), str(other))


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    "url, secret",
    [
        ("postgresql://dl:pa55@word@db.example/tune", "pa55@word"),
        ("postgresql://dl@db.example/tune?password=pa55word&sslmode=require", "pa55word"),
        ("postgresql://dl@db.example/tune?sslmode=require&pass%77ord=pa55word", "pa55word"),
        ("postgresql://dl@db.example/tune?passfile=/home/dl/.pa55file", "/home/dl/.pa55file"),
        ("host=db.example user=dl password='pa55 word' dbname=tune", "pa55 word"),
        ("host=db.example password = pa55word dbname=tune", "pa55word"),
    ],
)
def test_every_libpq_credential_form_is_masked(url, secret):
    assert secret not in credentials.masked(url) and "***" in credentials.masked(url)
    assert secret not in credentials.without_secrets(url)
    assert secret not in credentials.scrubbed(f"driver said: bad {secret} in {url}", url)
    assert "db.example" in credentials.masked(url)


def test_a_storage_url_with_a_typo_is_refused_without_its_password(tmp_path):
    config = write_config(tmp_path)
    result = tune(config, "--out", tmp_path / "study", "--storage", "postgresq://dl:pa55word@localhost/tune")
    one_message(result, "not a storage URL", "postgresq://dl:***@localhost/tune")
    assert "pa55word" not in result.output


def with_password(url: str, secret: str) -> str:
    """The test server trusts every local user: a password in the URL is accepted and ignored."""
    return url + ("&" if "?" in url else "?") + f"password={secret}"


def postgres_study(url: str, name: str):
    from dltrain.tune.storage import StudyPlace, open_storage

    return optuna.load_study(study_name=name, storage=open_storage(StudyPlace(Path("."), url, name)))


def wait_for_running_trial(url: str, name: str, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(trial.state.name == "RUNNING" for trial in postgres_study(url, name).trials):
                return
        except KeyError:
            pass  # the study is not created yet
        time.sleep(0.2)
    raise AssertionError("no trial started in time")


@needs_postgres
def test_no_password_is_printed_or_stored_by_a_postgres_study(tmp_path, monkeypatch):
    from dltrain.tune.worker import Worker

    secret = f"S3cret{os.getpid()}x"
    name = f"secret_{os.getpid()}_{time.time_ns() % 10**9}"
    config = write_config(tmp_path, trials=2)
    url = with_password(POSTGRES_URL, secret)
    out = tmp_path / "study"
    real_train = Worker._train

    def ctrl_c(self, *args):  # Ctrl-C during the first trial
        raise KeyboardInterrupt

    monkeypatch.setattr(Worker, "_train", ctrl_c)
    interrupted = tune(config, "--out", out, "--storage", url, "--study", name)
    assert interrupted.exit_code == 130, interrupted.output
    assert "continue with: dltrain tune" in interrupted.output and "PGPASSWORD" in interrupted.output
    monkeypatch.setattr(Worker, "_train", real_train)
    from sqlalchemy.engine import make_url

    in_userinfo = make_url(POSTGRES_URL).set(password=secret).render_as_string(hide_password=False)
    finished_run = tune(config, "--out", out, "--storage", in_userinfo, "--study", name)
    assert finished_run.exit_code == 0, finished_run.output
    assert secret not in interrupted.output + finished_run.output
    written = [path for path in out.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()]
    assert written == []
    assert ":***@" in (out / "study.json").read_text()  # the last run's URL, masked


class _Proxy:
    """A TCP relay to the test server that the test can cut: the database "stops"."""

    def __init__(self, host: str, port: int):
        self.target, self.sockets, self.stopped = (host, port), [], threading.Event()
        self.frozen = threading.Event()  # data still taken, never passed on: a server that stopped answering
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                return
            self.sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source, sink):
        try:
            while data := source.recv(65536):
                if not self.frozen.is_set():
                    sink.sendall(data)
        except OSError:
            pass

    def stop(self):
        self.stopped.set()
        for item in [self.listener, *self.sockets]:
            try:
                item.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            item.close()


@needs_postgres
def test_a_database_that_stops_ends_the_command_with_one_masked_message(tmp_path):
    from sqlalchemy.engine import make_url

    real = make_url(POSTGRES_URL)
    proxy = _Proxy(real.host, real.port)
    secret = "Pr0xySecret"
    url = with_password(POSTGRES_URL.replace(f":{real.port}/", f":{proxy.port}/"), secret)
    config = write_config(tmp_path, epochs=5000, trials=3)
    name = f"stops_{os.getpid()}_{time.time_ns() % 10**9}"
    threading.Thread(target=lambda: (wait_for_running_trial(POSTGRES_URL, name), proxy.stop()), daemon=True).start()
    started = time.monotonic()
    result = tune(config, "--out", tmp_path / "study", "--storage", url, "--study", name)
    assert time.monotonic() - started < 60
    assert result.exit_code == 1, result.output
    assert "stopped answering" in result.output and "password=***" in result.output
    assert secret not in result.output and "Traceback" not in result.output


@needs_postgres
def test_a_database_that_stops_answering_ends_the_command_within_bounded_time(tmp_path, monkeypatch):
    from sqlalchemy.engine import make_url

    real = make_url(POSTGRES_URL)
    proxy = _Proxy(real.host, real.port)
    url = POSTGRES_URL.replace(f":{real.port}/", f":{proxy.port}/")
    config = write_config(tmp_path, epochs=5000, trials=3)
    name = f"frozen_{os.getpid()}_{time.time_ns() % 10**9}"
    monkeypatch.setenv("DLTRAIN_TUNE_HEARTBEAT", "1")  # silent for two heartbeats: 2 s
    frozen_at = []

    def freeze():
        wait_for_running_trial(POSTGRES_URL, name)
        proxy.frozen.set()
        frozen_at.append(time.monotonic())

    threading.Thread(target=freeze, daemon=True).start()
    threading.Timer(60, proxy.stop).start()  # in case the command waits forever: end the test all the same
    result = tune(config, "--out", tmp_path / "study", "--storage", url, "--study", name)
    waited = time.monotonic() - frozen_at[0]
    proxy.stop()
    assert result.exit_code == 1, result.output
    assert "stopped answering (no answer from the server for 2 s)" in result.output
    assert waited < 20, waited


# ---------------------------------------------------------------- no hangs


def running_trials(out: Path) -> list:
    try:
        return [t for t in journal_study(out).trials if t.state.name == "RUNNING" and "worker" in t.user_attrs]
    except (KeyError, ValueError, FileNotFoundError):
        return []  # the study is not created yet


def test_a_killed_worker_process_is_noticed_while_the_other_trains_and_its_trial_retried(tmp_path):
    # Long trials: the first worker is still in its trial when the second one (a fresh interpreter) starts its own.
    config = write_config(tmp_path, epochs=20000, trials=2)
    out = tmp_path / "study"
    process = dltrain_process("tune", config, "--out", out, "--workers", "2", "--quiet")
    try:
        victim, deadline = None, time.monotonic() + 90
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.2)
            children = [t for t in running_trials(out) if int(t.user_attrs["worker"].split(":")[1]) != process.pid]
            victim = children[0] if children else None
        assert victim is not None, "the second worker started no trial"
        os.kill(int(victim.user_attrs["worker"].split(":")[1]), signal.SIGKILL)
        retries, deadline = [], time.monotonic() + 15  # the first worker looks once a second
        while not retries and time.monotonic() < deadline:
            time.sleep(0.2)
            study = journal_study(out)
            retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert len(retries) == 1 and retries[0].state.name == "WAITING", "the dead worker's trial was not retried"
    killed = study.trials[victim.number]
    assert killed.state.name == "FAIL" and "died" in killed.user_attrs["failed_because"]
    assert retries[0].params == killed.params
    assert process.returncode == 130, output  # the command was never stuck on its dead child
    assert "Traceback" not in output


# ---------------------------------------------------------------- bounds up front


@pytest.mark.parametrize(
    "args, words",
    [
        (["--workers", "1000"], ["--workers 1000", "give at most"]),
        (["--timeout", "nan"], ["'--timeout'", "nan: give a finite number"]),
        (["--timeout", "inf"], ["'--timeout'", "inf: give a finite number"]),
    ],
    ids=["workers", "timeout-nan", "timeout-inf"],
)
def test_bounds_are_checked_before_anything_starts(tmp_path, args, words):
    config = write_config(tmp_path)
    one_message(tune(config, "--out", tmp_path / "study", *args), *words)
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize(
    "space, words",
    [
        ({"train.batch_size": {"low": 8, "high": 30, "step": 4}}, ["step 4 does not divide", "set high to 28"]),
        ({"optimizer.lr": {"low": 0.01, "high": 0.1, "step": 0.04}}, ["step 0.04 does not divide"]),
        ({"data.validation": [0.3, 0]}, ["tune.space.data.validation", "no validation data"]),
        ({"data.validation": {"low": 0.0, "high": 0.4}}, ["no validation data"]),
        ({"train.metrics": [["accuracy"], ["f1_macro"]]}, []),  # val_loss is logged either way
    ],
    ids=["int-step", "float-step", "validation-0", "validation-range", "fine"],
)
def test_the_space_is_checked_for_impossible_trials(tmp_path, space, words):
    config = write_config(tmp_path, space=space)
    result = runner.invoke(app, ["check", str(config)])
    if not words:
        assert result.exit_code == 0, result.output
        return
    one_message(result, *words)


@pytest.mark.parametrize("value", ["abc", "0", "-3"])
def test_the_heartbeat_variable_is_checked_naming_it(tmp_path, value):
    config = write_config(tmp_path)
    one_message(
        tune(config, "--out", tmp_path / "study", env={"DLTRAIN_TUNE_HEARTBEAT": value}), "DLTRAIN_TUNE_HEARTBEAT"
    )


# ---------------------------------------------------------------- best/ interrupted


def test_an_interrupted_best_retrain_leaves_no_hidden_folder_and_says_how_to_rebuild(tmp_path, monkeypatch):
    from dltrain.commands import tune as tune_command
    from dltrain.train import Callbacks

    class CtrlC(Callbacks):
        def on_epoch_end(self, epoch, record):
            raise KeyboardInterrupt

    real_fit = tune_command.fit_run
    monkeypatch.setattr(tune_command, "fit_run", lambda path, out: real_fit(path, out=out, callbacks=CtrlC()))
    config = write_config(tmp_path)
    out = tmp_path / "study"
    result = tune(config, "--out", out)
    assert result.exit_code == 130, result.output
    assert f"rebuild it with: dltrain tune {config} --out {out}" in " ".join(result.output.split())
    assert not [path.name for path in out.iterdir() if path.name.startswith(".best")]
    assert not (out / "best").exists() and (out / "best.yaml").exists()
    monkeypatch.setattr(tune_command, "fit_run", real_fit)
    again = tune(config, "--out", out)
    assert again.exit_code == 0, again.output
    assert (out / "best" / "model.json").exists()


# ---------------------------------------------------------------- plot reads the study safely


@pytest.mark.parametrize(
    "name, payload, words",
    [
        ("study.json", b"{not json", ["study.json: not JSON"]),
        ("study.json", b"[1, 2]", ["not a study description"]),
        ("trials.csv", b"number,state,value\n0,complete,\xff\xfe\n", ["trials.csv: not UTF-8"]),
        ("trials.csv", b"number,state,value\nzero,complete,0.5\n", ["line 2", "number 'zero'"]),
        ("trials.csv", b"a,b\n1,2\n", ["no number, state and value columns"]),
    ],
    ids=["json-garbage", "json-list", "csv-not-utf8", "csv-bad-number", "csv-no-columns"],
)
def test_plot_of_a_damaged_study_is_one_message(study_copy, name, payload, words):
    pytest.importorskip("matplotlib")
    _, study = study_copy
    (study / name).write_bytes(payload)
    one_message(runner.invoke(app, ["plot", str(study)]), str(study / name), *words)


def _limited_memory():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # the old reader of /dev/zero ran out of memory


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_plot_refuses_a_fifo_and_a_device_without_waiting(study_copy, kind):
    pytest.importorskip("matplotlib")
    _, study = study_copy
    if kind == "fifo":
        (study / "trials.csv").unlink()
        os.mkfifo(study / "trials.csv")
    else:
        (study / "study.json").unlink()
        (study / "study.json").symlink_to("/dev/zero")
    process = subprocess.Popen(
        [sys.executable, "-m", "dltrain", "plot", str(study)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_limited_memory,
    )
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 2, output
    assert ("a FIFO" if kind == "fifo" else "a character device") in output and "Traceback" not in output
