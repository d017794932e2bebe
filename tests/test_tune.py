"""`dltrain tune` and `dltrain explain`: a search on iris end to end, continuing, reproducing,
parallel workers on a journal file and on PostgreSQL, dead workers, Ctrl-C."""

import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dltrain.cli import app
from dltrain.commands import tune as tune_module
from dltrain.tune import storage as tune_storage

optuna = pytest.importorskip("optuna", reason="the tune extra is not installed")

ROOT = Path(__file__).resolve().parents[1]
IRIS = ROOT / "data" / "iris.csv"
POSTGRES_URL = os.environ.get("DLTRAIN_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="DLTRAIN_TEST_POSTGRES_URL is unset (.ci/run starts a throwaway PostgreSQL server)"
)
runner = CliRunner()


def write_config(
    folder: Path, epochs=4, trials=4, pruner="median", sampler="tpe", features=None, space=None, name="iris"
) -> Path:
    config = {
        "name": name,
        "seed": 0,
        "data": {"train": str(IRIS), "target": "species", "validation": 0.3},
        "model": {"layers": [{"units": 8, "activation": "relu"}]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "train": {"epochs": epochs, "batch_size": 16},
        "tune": {
            "metric": "val_loss",
            "trials": trials,
            "sampler": sampler,
            "pruner": pruner,
            "space": space
            or {
                "optimizer.lr": {"low": 1e-3, "high": 0.1, "log": True},
                "optimizer.name": ["adam", "rmsprop"],
                "model.layers": [
                    [{"units": 4, "activation": "relu"}],
                    [{"units": 8, "activation": "tanh"}, {"units": 4, "activation": "relu"}],
                ],
            },
        },
    }
    if features:
        config["tune"]["features"] = features
    path = folder / "search.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def trials_of(study_dir: Path) -> list[dict]:
    return list(csv.DictReader((study_dir / "trials.csv").open()))


def journal_study(study_dir: Path, name="iris"):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(study_dir / "journal.log")))
    return optuna.load_study(study_name=name, storage=storage)


def finished(trials) -> list:
    return [trial for trial in trials if trial.state.name in ("COMPLETE", "PRUNED")]


def dltrain_process(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dltrain", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_for_running_trial(study_dir: Path, timeout=60.0, name="iris", study_loader=None):
    deadline = time.monotonic() + timeout
    loader = study_loader or (lambda: journal_study(study_dir, name))
    while time.monotonic() < deadline:
        try:
            study = loader()
            running = [
                trial
                for trial in study.get_trials(deepcopy=False)
                if trial.state.name == "RUNNING" and "worker" in trial.user_attrs
            ]
            if running:
                return running[0]
        except (KeyError, FileNotFoundError, ValueError):
            pass  # the study is not created yet
        time.sleep(0.1)
    raise AssertionError("no trial started in time")


# ---------------------------------------------------------------- one worker, end to end


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tune")
    config = write_config(folder, features="select")
    result = runner.invoke(app, ["tune", str(config), "--out", str(folder / "study")])
    return folder, config, folder / "study", result


def test_tune_writes_the_study_folder(searched):
    folder, config, study_dir, result = searched
    assert result.exit_code == 0, result.output
    for name in ("journal.log", "trials.csv", "best.yaml", "importance.csv", "study.json"):
        assert (study_dir / name).exists(), name
    assert "best: trial" in result.output and "best trials (val_loss)" in result.output
    assert "feature importance" in result.output
    assert "4 trials finished (" in result.output and "[4/4] trial 3" in result.output


def test_trials_csv_has_a_column_per_parameter(searched):
    _, _, study_dir, _ = searched
    rows = trials_of(study_dir)
    assert list(rows[0]) == [
        "number",
        "state",
        "value",
        "optimizer.lr",
        "optimizer.name",
        "model.layers",
        "features.k",
        "network",
        "epochs",
        "seconds",
    ]
    assert [row["number"] for row in rows] == ["0", "1", "2", "3"]
    assert all(row["state"] in ("complete", "pruned") for row in rows)
    assert all(1 <= int(row["features.k"]) <= 4 and 1 <= int(row["epochs"]) <= 4 for row in rows)
    assert all(float(row["seconds"]) > 0 for row in rows)


def test_importance_csv_ranks_every_column(searched):
    _, _, study_dir, _ = searched
    rows = list(csv.DictReader((study_dir / "importance.csv").open()))
    assert sorted(row["column"] for row in rows) == ["petal_length", "petal_width", "sepal_length", "sepal_width"]
    assert [float(row["importance"]) for row in rows] == sorted(
        (float(row["importance"]) for row in rows), reverse=True
    )


def test_best_yaml_trains_as_is_to_the_best_value(searched, tmp_path):
    _, _, study_dir, _ = searched
    text = (study_dir / "best.yaml").read_text()
    best = min((row for row in trials_of(study_dir) if row["state"] == "complete"), key=lambda row: float(row["value"]))
    assert text.startswith(f"# best of study 'iris': trial {best['number']}, val_loss = ")
    assert "tune:" not in text
    stored = yaml.safe_load(text)
    assert len(stored["data"]["features"]) == int(best["features.k"])
    result = runner.invoke(app, ["fit", str(study_dir / "best.yaml"), "--out", str(tmp_path / "again"), "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "again" / "model.json").read_text())
    assert manifest["metrics"]["validation"]["loss"] == pytest.approx(float(best["value"]), rel=1e-5)


def test_best_run_folder_works_with_eval_and_predict(searched):
    _, _, study_dir, _ = searched
    evaluated = runner.invoke(app, ["eval", str(study_dir / "best"), str(IRIS), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert 0 <= json.loads(evaluated.output)["accuracy"] <= 1
    predicted = runner.invoke(app, ["predict", str(study_dir / "best"), str(IRIS)])
    assert predicted.exit_code == 0
    assert predicted.output.splitlines()[0].startswith("species,prob_")
    assert len(predicted.output.splitlines()) == 151


def test_plot_draws_a_study_folder(searched, tmp_path):
    _, _, study_dir, _ = searched
    result = runner.invoke(app, ["plot", str(study_dir), "--out", str(tmp_path / "study.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explain_prints_importances_and_json(searched):
    _, _, study_dir, _ = searched
    table = runner.invoke(app, ["explain", str(study_dir / "best"), str(IRIS)])
    assert table.exit_code == 0, table.output
    assert "permutation importance" in table.output and "±" in table.output
    as_json = runner.invoke(app, ["explain", str(study_dir / "best"), str(IRIS), "--json", "--repeats", "3"])
    document = json.loads(as_json.output)
    assert document["repeats"] == 3 and document["loss"] > 0
    columns = document["columns"]
    assert {row["column"] for row in columns} <= {"petal_length", "petal_width", "sepal_length", "sepal_width"}
    assert all(row["spread"] >= 0 for row in columns)
    assert [row["importance"] for row in columns] == sorted((row["importance"] for row in columns), reverse=True)


def test_explain_finds_the_petals_matter_more_than_the_sepals(tmp_path):
    config = write_config(tmp_path, epochs=30)
    assert runner.invoke(app, ["fit", str(config), "--out", str(tmp_path / "run"), "--quiet"]).exit_code == 0
    document = json.loads(runner.invoke(app, ["explain", str(tmp_path / "run"), str(IRIS), "--json"]).output)
    importance = {row["column"]: row["importance"] for row in document["columns"]}
    assert max(importance["petal_length"], importance["petal_width"]) > importance["sepal_length"]


# ---------------------------------------------------------------- continuing and reproducing


def test_rerun_continues_to_n_trials_then_says_it_is_finished(tmp_path):
    config = write_config(tmp_path, trials=2)
    out = tmp_path / "study"
    assert runner.invoke(app, ["tune", str(config), "--out", str(out), "--quiet"]).exit_code == 0
    assert len(trials_of(out)) == 2
    more = runner.invoke(app, ["tune", str(config), "--out", str(out), "--trials", "4"])
    assert more.exit_code == 0, more.output
    assert [row["number"] for row in trials_of(out)] == ["0", "1", "2", "3"]
    assert "[3/4] trial 2" in more.output
    again = runner.invoke(app, ["tune", str(config), "--out", str(out), "--trials", "4"])
    assert again.exit_code == 0
    assert "is finished: 4 of 4 trials done" in again.output and "best: trial" in again.output
    assert len(trials_of(out)) == 4


def test_one_worker_and_one_seed_give_the_same_trials(tmp_path):
    config = write_config(tmp_path, trials=4)
    for out in ("first", "second"):
        assert runner.invoke(app, ["tune", str(config), "--out", str(tmp_path / out), "--quiet"]).exit_code == 0

    def drawn(out):
        return [{key: value for key, value in row.items() if key != "seconds"} for row in trials_of(tmp_path / out)]

    assert drawn("first") == drawn("second")
    assert (tmp_path / "first" / "best.yaml").read_text() == (tmp_path / "second" / "best.yaml").read_text()


def test_grid_sampler_runs_every_choice_once(tmp_path):
    config = write_config(
        tmp_path,
        trials=10,
        sampler="grid",
        pruner="none",
        space={"optimizer.name": ["adam", "sgd"], "train.batch_size": [16, 32]},
    )
    result = runner.invoke(app, ["tune", str(config), "--out", str(tmp_path / "grid")])
    assert result.exit_code == 0, result.output
    assert "the grid has 4 points" in result.output
    rows = trials_of(tmp_path / "grid")
    assert sorted((row["optimizer.name"], row["train.batch_size"]) for row in rows) == [
        ("adam", "16"),
        ("adam", "32"),
        ("sgd", "16"),
        ("sgd", "32"),
    ]


def test_a_missing_tune_extra_is_one_message(tmp_path, monkeypatch):
    config = write_config(tmp_path)
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now fails
    result = runner.invoke(app, ["tune", str(config), "--out", str(tmp_path / "study")])
    assert result.exit_code == 2
    assert "dltrain tune needs Optuna: pip install '.[tune]'" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- several workers, dead workers, Ctrl-C


def assert_exactly_n_distinct(study, n):
    done = finished(study.get_trials(deepcopy=False))
    assert len(done) == n
    assert len({trial.number for trial in done}) == n
    # Surplus trials (a worker that asked after the N-th began) are failed without running.
    assert all(trial.user_attrs.get("surplus") or trial.state.name != "RUNNING" for trial in study.trials)


def test_two_workers_on_the_journal_finish_exactly_n_trials_and_every_trial_is_shown(tmp_path, monkeypatch):
    from dltrain.tune.worker import Worker

    # This process's worker is held back a little (its child processes are not), so that the
    # second worker, however slowly its interpreter starts, runs some of the trials.
    train = Worker._train
    monkeypatch.setattr(Worker, "_train", lambda self, *args: time.sleep(0.4) or train(self, *args))
    config = write_config(tmp_path, trials=6, epochs=20, pruner="none")
    result = runner.invoke(app, ["tune", str(config), "--out", str(tmp_path / "study"), "--workers", "2"])
    assert result.exit_code == 0, result.output
    study = journal_study(tmp_path / "study")
    assert_exactly_n_distinct(study, 6)
    assert len(trials_of(tmp_path / "study")) == len([t for t in study.trials if not t.user_attrs.get("surplus")])
    assert (tmp_path / "study" / "best" / "model.json").exists()
    by_the_child = [t for t in finished(study.trials) if f":{os.getpid()}:" not in t.user_attrs["worker"]]
    assert by_the_child
    shown = [int(number) for number in re.findall(r"^\[\d/6\] trial (\d+) ", result.output, re.M)]
    assert sorted(shown) == sorted(trial.number for trial in finished(study.trials))


def test_two_commands_on_one_journal_share_the_trials(tmp_path):
    config = write_config(tmp_path, trials=6, epochs=150, pruner="none")
    out = tmp_path / "study"
    out.mkdir()
    processes = [dltrain_process("tune", config, "--out", out, "--quiet") for _ in range(2)]
    outputs = [process.communicate(timeout=180)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    study = journal_study(out)
    assert_exactly_n_distinct(study, 6)
    assert len({trial.user_attrs["worker"] for trial in finished(study.trials)}) == 2
    assert (out / "best" / "model.json").exists()
    assert not [path.name for path in out.iterdir() if path.name.startswith(".best")]


def test_a_worker_killed_mid_trial_loses_nothing_and_its_trial_is_retried(tmp_path):
    config = write_config(tmp_path, trials=3, epochs=400, pruner="none")
    out = tmp_path / "study"
    process = dltrain_process("tune", config, "--out", out, "--quiet")
    try:
        running = wait_for_running_trial(out)
        time.sleep(0.3)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    write_config(tmp_path, trials=3, epochs=3, pruner="none")  # the same search, shorter fits
    result = runner.invoke(app, ["tune", str(config), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    study = journal_study(out)
    killed = study.trials[running.number]
    assert killed.state.name == "FAIL"
    assert "died" in killed.user_attrs["failed_because"]
    retries = [trial for trial in study.trials if trial.system_attrs.get("failed_trial") == running.number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert retries[0].params == killed.params
    assert_exactly_n_distinct(study, 3)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_fails_the_running_trial_exits_130_and_the_rerun_continues(tmp_path, stop):
    config = write_config(tmp_path, trials=3, epochs=400, pruner="none")
    out = tmp_path / "study"
    process = dltrain_process("tune", config, "--out", out)
    try:
        running = wait_for_running_trial(out)
        time.sleep(0.3)
        process.send_signal(stop)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + stop, output
    assert "the running trial is recorded as failed" in output and "--out" in output
    assert "Traceback" not in output
    assert journal_study(out).trials[running.number].state.name == "FAIL"
    write_config(tmp_path, trials=3, epochs=3, pruner="none")
    result = runner.invoke(app, ["tune", str(config), "--out", str(out), "--quiet", "--trials", "2"])
    assert result.exit_code == 0, result.output
    assert len(finished(journal_study(out).trials)) == 2


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture
def postgres_study_name(request):
    return f"t{os.getpid()}_{request.node.name[-20:]}_{time.time_ns() % 10**9}"


def postgres_study(name):
    storage = tune_storage.open_storage(tune_storage.StudyPlace(Path("."), POSTGRES_URL, name))
    return optuna.load_study(study_name=name, storage=storage)


@needs_postgres
def test_two_workers_on_postgres_finish_exactly_n_trials(tmp_path, postgres_study_name):
    config = write_config(tmp_path, trials=6, epochs=80, pruner="none")
    result = runner.invoke(
        app,
        [
            "tune",
            str(config),
            "--out",
            str(tmp_path / "study"),
            "--workers",
            "2",
            "--storage",
            POSTGRES_URL,
            "--study",
            postgres_study_name,
        ],
    )
    assert result.exit_code == 0, result.output
    study = postgres_study(postgres_study_name)
    assert_exactly_n_distinct(study, 6)
    assert len({trial.user_attrs["worker"] for trial in finished(study.trials)}) == 2
    assert (tmp_path / "study" / "best" / "model.json").exists()


@needs_postgres
def test_two_commands_on_postgres_join_one_study(tmp_path, postgres_study_name):
    config = write_config(tmp_path, trials=6, epochs=20)
    args = ["tune", config, "--storage", POSTGRES_URL, "--study", postgres_study_name, "--quiet"]
    first = dltrain_process(*args, "--out", tmp_path / "a")
    second = dltrain_process(*args, "--out", tmp_path / "b")
    outputs = [process.communicate(timeout=120)[0] for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    study = postgres_study(postgres_study_name)
    assert_exactly_n_distinct(study, 6)


@needs_postgres
def test_postgres_heartbeat_retries_a_killed_workers_trial(tmp_path, postgres_study_name):
    config = write_config(tmp_path, trials=2, epochs=400, pruner="none")
    env = {"DLTRAIN_TUNE_HEARTBEAT": "1"}
    args = ["tune", config, "--storage", POSTGRES_URL, "--study", postgres_study_name, "--quiet"]
    process = dltrain_process(*args, "--out", tmp_path / "a", env=env)
    try:
        running = wait_for_running_trial(tmp_path, study_loader=lambda: postgres_study(postgres_study_name))
        time.sleep(0.3)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    time.sleep(2.5)  # past the grace period of two heartbeats
    write_config(tmp_path, trials=2, epochs=3, pruner="none")
    rerun = dltrain_process(*args, "--out", tmp_path / "b", env=env)
    output, _ = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, output
    study = postgres_study(postgres_study_name)
    assert study.trials[running.number].state.name == "FAIL"
    retries = [trial for trial in study.trials if trial.system_attrs.get("failed_trial") == running.number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert_exactly_n_distinct(study, 2)


def test_timeout_stops_starting_trials_and_the_rerun_continues(tmp_path):
    config = write_config(tmp_path, trials=50, epochs=100, pruner="none")
    out = tmp_path / "study"
    result = runner.invoke(app, ["tune", str(config), "--out", str(out), "--timeout", "0.3"])
    assert result.exit_code == 0, result.output
    assert "stopped: the timeout was reached; run the same command again to continue" in result.output
    assert 1 <= len(trials_of(out)) < 50
    assert (out / "best.yaml").exists()


def test_a_metric_fit_logs_on_training_rows_can_be_searched_too(tmp_path):
    config = write_config(tmp_path, trials=2, space={"optimizer.lr": {"low": 0.001, "high": 0.1}})
    document = yaml.safe_load(config.read_text())
    document["tune"]["metric"] = "accuracy"
    config.write_text(yaml.safe_dump(document))
    result = runner.invoke(app, ["tune", str(config), "--out", str(tmp_path / "study"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "(higher is better)" in result.output


def test_the_dataset_is_parsed_once_per_worker(tmp_path, monkeypatch):
    from dltrain import build
    from dltrain.tune import worker as tune_worker

    calls = []
    original = build.prepare_data
    for module in (tune_worker, build):  # the trials' data, and best/'s fit
        monkeypatch.setattr(module, "prepare_data", lambda *args, **kw: calls.append(1) or original(*args, **kw))
    config = write_config(tmp_path, trials=5, features="select")
    result = tune_module.tune(config, out=tmp_path / "study", on_trial=lambda *args: None)
    assert result.counts["COMPLETE"] + result.counts["PRUNED"] == 5
    # One parse for the search (ranking and every trial, whatever k); best/ is a separate fit.
    assert len(calls) == 2


def test_a_missing_psycopg_is_one_message(tmp_path, monkeypatch):
    config = write_config(tmp_path)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    result = runner.invoke(
        app,
        ["tune", str(config), "--out", str(tmp_path / "study"), "--storage", "postgresql://nobody@127.0.0.1:9/nodb"],
    )
    assert result.exit_code == 2
    assert "a PostgreSQL storage needs psycopg: pip install '.[tune]'" in result.output


def test_feature_selection_keeps_a_categorical_columns_inputs_together(tmp_path):
    rows = list(csv.reader(IRIS.open()))
    colours = ["red", "green", "blue"]
    with (tmp_path / "iris_colour.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["colour", *rows[0]])
        writer.writerows([colours[index % 3], *row] for index, row in enumerate(rows[1:]))
    config = write_config(
        tmp_path, trials=6, features="select", pruner="none", space={"optimizer.lr": {"low": 0.005, "high": 0.05}}
    )
    document = yaml.safe_load(config.read_text())
    document["data"]["train"] = str(tmp_path / "iris_colour.csv")
    config.write_text(yaml.safe_dump(document))
    out = tmp_path / "study"
    result = runner.invoke(app, ["tune", str(config), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    ranked = [row["column"] for row in csv.DictReader((out / "importance.csv").open())]
    assert sorted(ranked) == sorted(["colour", "sepal_length", "sepal_width", "petal_length", "petal_width"])
    best = min((row for row in trials_of(out) if row["state"] == "complete"), key=lambda row: float(row["value"]))
    stored = yaml.safe_load((out / "best.yaml").read_text())
    assert sorted(stored["data"]["features"]) == sorted(ranked[: int(best["features.k"])])
    # The trial trained on a slice of the prepared inputs; best/ was fitted from best.yaml.
    manifest = json.loads((out / "best" / "model.json").read_text())
    assert manifest["metrics"]["validation"]["loss"] == pytest.approx(float(best["value"]), rel=1e-5)


def test_a_regression_search_reports_the_metric_in_the_targets_units(tmp_path):
    config = {
        "name": "diabetes",
        "seed": 0,
        "data": {"train": str(ROOT / "data" / "diabetes.csv"), "target": "progression", "validation": 0.2},
        "model": {"layers": [{"units": 8}]},
        "train": {"epochs": 5},
        "tune": {
            "metric": "val_rmse",
            "trials": 3,
            "pruner": "none",
            "space": {"optimizer.lr": {"low": 0.001, "high": 0.05, "log": True}},
        },
    }
    path = tmp_path / "diabetes.yaml"
    path.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["tune", str(path), "--out", str(tmp_path / "study"), "--quiet"])
    assert result.exit_code == 0, result.output
    best = min(float(row["value"]) for row in trials_of(tmp_path / "study"))
    manifest = json.loads((tmp_path / "study" / "best" / "model.json").read_text())
    assert manifest["metrics"]["validation"]["rmse"] == pytest.approx(best, rel=1e-5)
    assert best > 10  # disease progression is in the tens to hundreds, not in standard units


def test_a_study_continues_only_the_search_it_was_made_for(tmp_path):
    config = write_config(tmp_path, trials=1, epochs=2)
    out = tmp_path / "study"
    assert runner.invoke(app, ["tune", str(config), "--out", str(out), "--quiet"]).exit_code == 0
    write_config(tmp_path, trials=2, epochs=2, space={"optimizer.lr": {"low": 0.001, "high": 0.01}})
    result = runner.invoke(app, ["tune", str(config), "--out", str(out), "--quiet"])
    assert result.exit_code == 2
    assert "was made for another tune.metric, tune.features, tune.space or tune.cv" in result.output
    assert len(trials_of(out)) == 1


# ---------------------------------------------------------------- the pruner's warm-up


class AlwaysPrune(optuna.pruners.BasePruner):
    """A pruner that would stop every trial at its first report: only the warm-up holds it back."""

    def prune(self, study, trial):
        return True


@pytest.mark.parametrize("warmup, pruned_at", [(None, 3), (5, 6)], ids=["default", "tune.pruner_warmup"])
def test_no_trial_is_pruned_in_its_warm_up_epochs(tmp_path, monkeypatch, warmup, pruned_at):
    monkeypatch.setattr(optuna.pruners, "MedianPruner", lambda **options: AlwaysPrune())
    config = write_config(tmp_path, trials=2, epochs=20)  # default warm-up: max(2, 20 // 10) = 2 epochs
    if warmup is not None:
        document = yaml.safe_load(config.read_text())
        document["tune"]["pruner_warmup"] = warmup
        config.write_text(yaml.safe_dump(document))
    result = runner.invoke(app, ["tune", str(config), "--out", str(tmp_path / "study")])
    assert result.exit_code == 0, result.output
    rows = trials_of(tmp_path / "study")
    assert [(row["state"], row["epochs"]) for row in rows] == [("pruned", str(pruned_at))] * 2


def test_a_warm_up_as_long_as_the_training_is_refused(tmp_path):
    config = write_config(tmp_path, epochs=4)
    document = yaml.safe_load(config.read_text())
    document["tune"]["pruner_warmup"] = 4
    config.write_text(yaml.safe_dump(document))
    result = runner.invoke(app, ["tune", str(config), "--out", str(tmp_path / "study")])
    assert result.exit_code == 2
    assert (
        "tune.pruner_warmup: 4 epochs is not below train.epochs (4), so no trial could ever be pruned" in result.output
    )


# ---------------------------------------------------------------- best.yaml and best/ of init-written configs


def init_config_with_search(folder: Path, tune: dict) -> Path:
    config = folder / "iris.yaml"
    result = runner.invoke(app, ["init", str(IRIS), "--target", "species", "--out", str(config)])
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(config.read_text())
    assert set(document["data"]["columns"]) == {"sepal_length", "sepal_width", "petal_length", "petal_width"}
    document["train"]["epochs"] = 6
    document["tune"] = tune
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    return config


def test_feature_selection_on_an_init_config_writes_a_best_yaml_that_trains(tmp_path):
    config = init_config_with_search(tmp_path, {"trials": 2, "features": "select", "pruner": "none"})
    out = tmp_path / "study"
    result = runner.invoke(app, ["tune", str(config), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    stored = yaml.safe_load((out / "best.yaml").read_text())
    kept = stored["data"]["features"]
    assert len(kept) < 4  # a column was dropped (the trial drew k = 1 or 2 of 4)
    assert set(stored["data"]["columns"]) == set(kept)  # the dropped columns' entries went with them
    assert (out / "best" / "model.json").exists()
    again = runner.invoke(app, ["fit", str(out / "best.yaml"), "--out", str(tmp_path / "again"), "--quiet"])
    assert again.exit_code == 0, again.output


def test_a_failure_while_training_best_keeps_the_study_and_says_how_to_rebuild_best_alone(tmp_path, monkeypatch):
    from dltrain.errors import StorageError

    config = init_config_with_search(
        tmp_path, {"trials": 2, "pruner": "none", "space": {"optimizer.lr": {"low": 0.005, "high": 0.05}}}
    )
    out = tmp_path / "study"

    def full_disk(self, config_path, folder):
        (folder / "model.npz").parent.mkdir(parents=True, exist_ok=True)
        raise StorageError(f"{folder}/model.npz: No space left on device")

    monkeypatch.setattr(tune_module.CommandFitting, "fit", full_disk)
    result = runner.invoke(app, ["tune", str(config), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert "the search is complete and its files are kept" in result.output
    for name in ("journal.log", "trials.csv", "study.json", "best.yaml"):
        assert (out / name).stat().st_size > 0, name
    assert len(trials_of(out)) == 2
    assert not (out / "best").exists() and not [path for path in out.iterdir() if path.name.startswith(".best")]
    command = re.search(r"Rebuild it alone with: (.+)$", " ".join(result.output.split())).group(1)
    assert command == f"dltrain fit {out / 'best.yaml'} --out {out / 'best'}"
    monkeypatch.undo()
    rebuilt = runner.invoke(app, shlex.split(command)[1:] + ["--quiet"])
    assert rebuilt.exit_code == 0, rebuilt.output
    evaluated = runner.invoke(app, ["eval", str(out / "best"), str(IRIS)])
    assert evaluated.exit_code == 0, evaluated.output
