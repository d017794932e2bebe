"""Measure `dltrain tune`: search quality, the search's own cost per trial, and 2 workers against 1.

    python bench/tune.py quality     # digits and breast cancer: shipped config, tune (30 trials),
                                     # scikit-learn RandomizedSearchCV over MLPClassifier (30 candidates)
    python bench/tune.py overhead    # median seconds per trial spent outside training
    python bench/tune.py workers     # wall time of 20 trials with --workers 2 against --workers 1

Needs the `tune` and `bench` extras (optuna, scikit-learn). Every result is printed as a
Markdown table for docs/tune.md.

Quality uses one split for everyone: each dataset is split once (stratified, seed 0) into
train (64%), validation (16%) and test (20%) CSVs. dltrain's configs read train and
validation from those files; RandomizedSearchCV scores its candidates on the same validation
rows (PredefinedSplit), and every final model is trained on the train rows only and scored
once on the test rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dltrain.commands import fit  # noqa: E402
from dltrain.commands import tune as tune_module  # noqa: E402

DATASETS = {
    "digits": {"config": ROOT / "configs" / "digits.yaml", "target": "digit"},
    "breast_cancer": {"config": ROOT / "configs" / "breast_cancer.yaml", "target": "diagnosis"},
}
TRIALS = 30
LAYERS = [[64], [128], [128, 64], [256]]
BATCHES = [16, 32, 64, 128]


def split_csv(source: Path, target: str, folder: Path, seed: int = 0) -> dict:
    """Stratified train/validation/test CSVs (64/16/20) from one file."""
    rows = list(csv.reader(source.open(newline="")))
    header, body = rows[0], rows[1:]
    labels = np.array([row[header.index(target)] for row in body])
    rng = np.random.default_rng(seed)
    parts = {"train": [], "validation": [], "test": []}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = round(0.2 * len(members))
        n_validation = round(0.16 * len(members))
        parts["test"].extend(members[:n_test])
        parts["validation"].extend(members[n_test : n_test + n_validation])
        parts["train"].extend(members[n_test + n_validation :])
    paths = {}
    for name, indices in parts.items():
        path = folder / f"{name}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(body[index] for index in sorted(indices))
        paths[name] = path
    return paths


def dltrain_configs(name: str, folder: Path, paths: dict) -> tuple[Path, Path]:
    """The shipped config on the fixed split, and the same with a tune: section."""
    config = yaml.safe_load(DATASETS[name]["config"].read_text())
    config["data"].update(
        {"train": str(paths["train"]), "validation": str(paths["validation"]), "test": str(paths["test"])}
    )
    shipped = folder / "shipped.yaml"
    shipped.write_text(yaml.safe_dump(config, sort_keys=False))
    config["tune"] = {
        "metric": "val_loss",
        "trials": TRIALS,
        "sampler": "tpe",
        "pruner": "median",
        "space": {
            "optimizer.lr": {"low": 1e-4, "high": 1e-1, "log": True},
            "optimizer.name": ["adam", "sgd"],
            "optimizer.weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
            "train.batch_size": BATCHES,
            "model.layers": [[{"units": units, "activation": "relu"} for units in layers] for layers in LAYERS],
        },
    }
    tuned = folder / "tune.yaml"
    tuned.write_text(yaml.safe_dump(config, sort_keys=False))
    return shipped, tuned


def sklearn_search(name: str, paths: dict, epochs: int, scale: str) -> tuple[float, float, dict]:
    """RandomizedSearchCV over MLPClassifier: 30 candidates scored on the same validation rows."""
    import warnings

    from scipy.stats import loguniform
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import PredefinedSplit, RandomizedSearchCV
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    target = DATASETS[name]["target"]

    def read(path):
        rows = list(csv.reader(path.open(newline="")))
        header = rows[0]
        column = header.index(target)
        features = np.array([[float(value) for i, value in enumerate(row) if i != column] for row in rows[1:]])
        return features, np.array([row[column] for row in rows[1:]])

    train_x, train_y = read(paths["train"])
    validation_x, validation_y = read(paths["validation"])
    test_x, test_y = read(paths["test"])
    scaler = MinMaxScaler if scale == "minmax" else StandardScaler
    pipeline = make_pipeline(scaler(), MLPClassifier(max_iter=epochs, random_state=0))
    space = {
        "mlpclassifier__hidden_layer_sizes": [tuple(layers) for layers in LAYERS],
        "mlpclassifier__learning_rate_init": loguniform(1e-4, 1e-1),
        "mlpclassifier__solver": ["adam", "sgd"],
        "mlpclassifier__alpha": loguniform(1e-6, 1e-2),
        "mlpclassifier__batch_size": BATCHES,
    }
    fold = np.r_[np.full(len(train_y), -1), np.zeros(len(validation_y), dtype=int)]
    search = RandomizedSearchCV(
        pipeline,
        space,
        n_iter=TRIALS,
        cv=PredefinedSplit(fold),
        scoring="accuracy",
        refit=False,
        random_state=0,
        n_jobs=1,
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(np.vstack([train_x, validation_x]), np.r_[train_y, validation_y])
        best = pipeline.set_params(**search.best_params_).fit(train_x, train_y)  # train rows only, as dltrain
    seconds = time.perf_counter() - started
    return float((best.predict(test_x) == test_y).mean()), seconds, search.best_params_


def quality(_args):
    lines = [
        "| data | shipped config | dltrain tune (30 trials) | RandomizedSearchCV MLP (30) | tune s | sklearn s |",
        "|---|---|---|---|---|---|",
    ]
    for name in DATASETS:
        with tempfile.TemporaryDirectory() as temp:
            folder = Path(temp)
            paths = split_csv(ROOT / "data" / f"{name}.csv", DATASETS[name]["target"], folder)
            shipped, tuned = dltrain_configs(name, folder, paths)
            base = fit.fit(shipped, out=folder / "shipped-run")
            started = time.perf_counter()
            result = tune_module.tune(tuned, out=folder / "study")
            tune_seconds = time.perf_counter() - started
            best = json.loads((folder / "study" / "best" / "model.json").read_text())
            config = yaml.safe_load(shipped.read_text())
            sk_accuracy, sk_seconds, sk_params = sklearn_search(
                name, paths, config["train"]["epochs"], config["data"].get("scale", "standard")
            )
            counts = result.counts
            print(
                f"{name}: best trial {result.best['number']} {result.best['params']}; "
                f"{counts['COMPLETE']} complete, {counts['PRUNED']} pruned; sklearn best {sk_params}",
                file=sys.stderr,
            )
            lines.append(
                f"| {name} | {base.metrics['test']['accuracy']:.4f} | {best['metrics']['test']['accuracy']:.4f} "
                f"| {sk_accuracy:.4f} | {tune_seconds:.1f} | {sk_seconds:.1f} |"
            )
    print("\n".join(lines))


def _timing_config(folder: Path, epochs: int, trials: int, pruner: str = "none") -> Path:
    """Trials of equal cost: one architecture, only the learning rate searched (no pruning by default)."""
    config = yaml.safe_load(DATASETS["digits"]["config"].read_text())
    config["data"]["train"] = str(ROOT / "data" / "digits.csv")
    config["train"]["epochs"] = epochs
    config["tune"] = {
        "metric": "val_loss",
        "trials": trials,
        "sampler": "random",
        "pruner": pruner,
        "space": {"optimizer.lr": {"low": 1e-4, "high": 1e-2, "log": True}},
    }
    path = folder / "timing.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def overhead(args):
    with tempfile.TemporaryDirectory() as temp:
        config = _timing_config(Path(temp), epochs=args.epochs, trials=args.trials, pruner=args.pruner)
        result = tune_module.tune(config, out=Path(temp) / "study")
        seconds = sorted(result.overhead_seconds)
        trial_seconds = [float(row["seconds"]) for row in csv.DictReader((Path(temp) / "study" / "trials.csv").open())]
    print("| trials | epochs | pruner | median trial s | median overhead ms | max overhead ms |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {len(seconds)} | {args.epochs} | {args.pruner} | {statistics.median(trial_seconds):.3f} "
        f"| {1000 * statistics.median(seconds):.1f} | {1000 * seconds[-1]:.1f} |"
    )


def _trial_span(study_dir: Path) -> float:
    """Seconds from the first trial's start to the last trial's end, from the study's journal."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(study_dir / "journal.log")))
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    trials = [trial for trial in study.trials if trial.datetime_complete and not trial.user_attrs.get("surplus")]
    return (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()


def workers(args):
    """20 trials with --workers 1 and 2 in turn (repeats times): whole-command walls and the span
    of the trials themselves (first start to last end), medians and their ratios."""
    import subprocess

    walls, spans = {1: [], 2: []}, {1: [], 2: []}
    with tempfile.TemporaryDirectory() as temp:
        config = _timing_config(Path(temp), epochs=args.epochs, trials=20)
        for repeat in range(args.repeats):
            for count in (1, 2):
                out = Path(temp) / f"study-{count}-{repeat}"
                started = time.perf_counter()
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "dltrain",
                        "tune",
                        str(config),
                        "--out",
                        str(out),
                        "--workers",
                        str(count),
                        "--quiet",
                    ],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                walls[count].append(time.perf_counter() - started)
                spans[count].append(_trial_span(out))
    print("| trials | epochs | repeats | measure | 1 worker s (median) | 2 workers s (median) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, values in (("20 trials (first start to last end)", spans), ("whole command", walls)):
        one, two = statistics.median(values[1]), statistics.median(values[2])
        print(f"| 20 | {args.epochs} | {args.repeats} | {name} | {one:.1f} | {two:.1f} | {two / one:.2f} |")
    print(
        f"walls: 1 worker {[round(w, 1) for w in walls[1]]}, 2 workers {[round(w, 1) for w in walls[2]]}; "
        f"spans: 1 worker {[round(w, 1) for w in spans[1]]}, 2 workers {[round(w, 1) for w in spans[2]]}",
        file=sys.stderr,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("quality")
    cost = commands.add_parser("overhead")
    cost.add_argument("--trials", type=int, default=30)
    cost.add_argument("--epochs", type=int, default=5)
    cost.add_argument("--pruner", default="none", choices=["none", "median", "hyperband"])
    parallel = commands.add_parser("workers")
    parallel.add_argument("--epochs", type=int, default=10)
    parallel.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    {"quality": quality, "overhead": overhead, "workers": workers}[args.command](args)


if __name__ == "__main__":
    main()
