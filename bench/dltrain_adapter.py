"""The one place where the benchmarks touch the dltrain engine.

bench/run.py calls only the functions below; each runs dltrain's own code.

    make_engine_trainer(layer_sizes, batch_size, lr, seed) -> trainer
        trainer.train_epoch(X, y, max_batches=None) -> float   (mean training loss)
    load_csv(path) -> (X, y)
    fit_command(config, out_dir, epochs) -> list[str]           (argv for `dltrain fit`)
    eval_command(run_dir, csv_path) -> list[str]                (argv for `dltrain eval --json`)

Contract of the trainer (the PyTorch baseline in bench/torch_reference.py follows
the same one, so both sides do the same work):
  * a dense net: ``layer_sizes`` = [inputs, hidden..., classes]; ReLU on hidden
    layers, softmax + cross-entropy on the output; Adam (beta1 0.9, beta2 0.999,
    eps 1e-8) with learning rate ``lr``; float32 throughout;
  * ``X``: float32 array [n, inputs] already scaled to 0..1; ``y``: int64 array [n];
  * each ``train_epoch`` call draws a fresh permutation of the n rows from the
    trainer's own ``numpy.random.default_rng(seed)`` and walks it in consecutive
    batches of ``batch_size`` (the last one may be smaller); with ``max_batches``
    it stops after that many batches (the benchmark then scales the time to a
    full epoch);
  * it returns the mean cross-entropy over the samples it trained on.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

__all__ = [
    "make_engine_trainer",
    "load_csv",
    "fit_command",
    "eval_command",
    "ENGINE_LABEL",
    "engine_path",
    "start_engine_threads",
    "step_breakdown",
]

# Shown in the benchmark output.
ENGINE_LABEL = (
    "dltrain engine (Trainer, Sequential, BLAS products; fused numba kernels for bias + ReLU, "
    "ReLU mask + bias gradient, softmax cross-entropy and Adam where the step is large enough)"
)


class _EngineTrainer:
    """The engine's own training loop, exactly as `dltrain fit` runs it, one epoch per call."""

    def __init__(
        self,
        layer_sizes: list[int],
        batch_size: int,
        lr: float,
        seed: int,
        blas_threads: int | None = None,
        kernel_threads: int | None = None,
        fused: bool | None = None,
    ) -> None:
        self.blas_threads, self.kernel_threads, self.fused = blas_threads, kernel_threads, fused
        self.layer_sizes = [int(size) for size in layer_sizes]
        self.batch_size, self.lr, self.seed = int(batch_size), float(lr), seed
        self.trainer = None
        self.epoch = 0

    def _build(self, X: np.ndarray, y: np.ndarray):
        from dltrain.build import Seeds, array_trainer

        settings = {
            "seed": self.seed,
            "model": {"layers": [{"units": units, "activation": "relu"} for units in self.layer_sizes[1:-1]]},
            "loss": "cross_entropy",
            "optimizer": {"name": "adam", "lr": self.lr},
            "train": {"epochs": 1, "batch_size": self.batch_size},
        }
        # The contract's streams: initialisation and each epoch's permutation from default_rng(seed).
        seeds = Seeds(*(np.random.default_rng(self.seed) for _ in range(4)))
        return array_trainer(
            settings,
            X,
            y,
            class_labels=list(range(self.layer_sizes[-1])),
            seeds=seeds,
            blas_threads=self.blas_threads,
            kernel_threads=self.kernel_threads,
            fused=self.fused,
        )

    def train_epoch(self, X: np.ndarray, y: np.ndarray, max_batches: int | None = None) -> float:
        if self.trainer is None:
            self.trainer = self._build(X, y)
        self.epoch += 1
        return self.trainer.train_epoch(self.epoch, self.lr, max_batches)


def make_engine_trainer(
    layer_sizes: list[int],
    batch_size: int,
    lr: float,
    seed: int,
    blas_threads: int | None = None,
    kernel_threads: int | None = None,
    fused: bool | None = None,
) -> object:
    """A trainer for a dense ReLU/softmax net with Adam; see the module docstring for the contract.

    ``blas_threads``, ``kernel_threads`` and ``fused`` None let the engine choose per problem
    size and machine load, as `dltrain fit` does."""
    return _EngineTrainer(layer_sizes, batch_size, lr, seed, blas_threads, kernel_threads, fused)


class _Timed:
    """Seconds spent in the wrapped calls, summed per part of a step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, part: str, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - start

        return timed

    def iterable(self, part: str, iterable):
        """``iterable`` whose every ``next`` is timed (the batch gather happens there)."""
        timer = self

        class Timed:
            def __len__(self):
                return len(iterable)

            def __iter__(self):
                iterator = iter(iterable)
                while True:
                    start = time.perf_counter()
                    try:
                        item = next(iterator)
                    except StopIteration:
                        return
                    finally:
                        timer.seconds[part] = timer.seconds.get(part, 0.0) + time.perf_counter() - start
                    yield item

        return Timed()


def step_breakdown(trainer, X: np.ndarray, y: np.ndarray, batches: int) -> dict[str, float]:
    """Mean seconds per step of each part of a training step, over ``batches`` steps of a
    trainer from ``make_engine_trainer`` (trained one epoch first, so everything is warm).

    Parts: ``gather`` (the shuffled batch rows), ``products`` (every matrix product of the
    layers), ``layers`` (the rest of forward and backward: bias, activations and their
    gradients), ``loss``, ``record`` (the epoch's predictions kept for its metrics),
    ``optimizer``, and ``step`` (the whole step, so ``step`` minus the parts is the loop's
    own overhead)."""
    from dltrain.engine import layers

    trainer.train_epoch(X, y, batches)
    inner = trainer.trainer
    timer = _Timed()
    numpy_module = layers.xp

    class TimedArrays:  # the layers' array module, with its matrix product timed
        matmul = staticmethod(timer.wrap("products", numpy_module.matmul))

        def __getattr__(self, name):
            return getattr(numpy_module, name)

    saved = {
        (inner, "batches"): inner.batches,
        (inner.loss, "value_and_gradient"): None,
        (inner.predictions, "record"): None,
        (inner.optimizer, "step"): None,
    }
    inner.batches = timer.iterable("gather", inner.batches)
    inner.loss.value_and_gradient = timer.wrap("loss", inner.loss.value_and_gradient)
    inner.predictions.record = timer.wrap("record", inner.predictions.record)
    inner.optimizer.step = timer.wrap("optimizer", inner.optimizer.step)
    timed_arrays = TimedArrays()
    for layer in inner.model.layers:
        for name in ("forward", "backward"):
            saved[(layer, name)] = None
            setattr(layer, name, timer.wrap(f"layer.{name}", getattr(layer, name)))
        if getattr(layer, "backend", None) is not None:  # the model's array module (a frozen Backend)
            saved[(layer, "backend")] = layer.backend
            layer.backend = dataclasses.replace(layer.backend, xp=timed_arrays)
    layers.xp = timed_arrays
    try:
        start = time.perf_counter()
        trainer.train_epoch(X, y, batches)
        timer.seconds["step"] = time.perf_counter() - start
    finally:
        layers.xp = numpy_module
        for (owner, name), value in saved.items():
            if value is None:
                delattr(owner, name)  # the instance attribute shadowed the method
            else:
                setattr(owner, name, value)
    seconds = timer.seconds
    seconds["layers"] = seconds.pop("layer.forward", 0.0) + seconds.pop("layer.backward", 0.0) - seconds["products"]
    return {part: value / batches for part, value in seconds.items()}


def engine_path() -> str:
    """Which engine path runs (fused kernels or reference NumPy), as `dltrain --version` says."""
    from dltrain.engine import kernels

    return kernels.describe()


def start_engine_threads() -> str | None:
    """Start the fused kernels' thread pool now, so that it reads dltrain's thread settings
    before anything else changes them; the threading layer's name, or None without numba."""
    from dltrain.engine import kernels

    if not kernels.active():
        return None
    size = kernels.PARALLEL_MIN_ELEMENTS * kernels.LIGHT_KERNEL_FACTOR  # large enough to run in parallel
    kernels.bias_activation(np.zeros((1, size), np.float32), np.zeros(size, np.float32), relu=True)
    import numba

    return numba.threading_layer()


def engine_thread_choice(layer_sizes: list[int], batch_size: int) -> int:
    """How many BLAS threads the engine picks on its own for this network and batch size."""
    from dltrain.engine.backend import threads_for

    largest = max(batch_size * fan_in * fan_out for fan_in, fan_out in zip(layer_sizes[:-1], layer_sizes[1:]))
    return threads_for(largest)


def engine_thread_chooser(layer_sizes: list[int], batch_size: int):
    """A function that returns the threads the engine would pick now for this network and
    batch size, leaving the cores other processes keep busy alone (as `dltrain fit` does
    before each epoch)."""
    from dltrain.engine.threads import MachineLoad, threads_beside

    wanted = engine_thread_choice(layer_sizes, batch_size)
    load = MachineLoad()
    return lambda: threads_beside(wanted, load.other_busy_cores()) if wanted > 1 else 1


def load_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a CSV with a header and a ``label`` column with dltrain's loader: X float32, y int64."""
    from dltrain.data import CsvFile

    table = CsvFile.open(path)
    matrix = table.read(numeric=table.header).matrix  # one parse of the whole file, as `dltrain fit` does
    label = table.header.index("label")
    y = matrix[:, label].astype(np.int64)
    X = np.delete(matrix, label, axis=1)
    return X, y


def fit_command(config: str | os.PathLike, out_dir: str | os.PathLike, epochs: int | None) -> list[str]:
    """argv for the end-to-end run; ``epochs`` None means the config's own number."""
    argv = ["dltrain", "fit", str(config), "--quiet", "--out", str(out_dir), "--force"]
    if epochs is not None:
        argv += ["--set", f"train.epochs={int(epochs)}"]
    return argv


def eval_command(run_dir: str | os.PathLike, csv_path: str | os.PathLike) -> list[str]:
    """argv that evaluates a finished run on a CSV and prints JSON with an ``accuracy`` key."""
    return ["dltrain", "eval", str(run_dir), str(csv_path), "--json"]
