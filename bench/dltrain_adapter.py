"""The one place where the benchmarks touch the dltrain engine.

bench/run.py calls only the functions below. For now they are a plain NumPy
reference implementation, so the benchmark runs end to end before the engine
exists; rewire each function to the real engine (keeping its signature and
meaning) and the benchmark measures dltrain instead.

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

import os
from pathlib import Path

import numpy as np

__all__ = ["make_engine_trainer", "load_csv", "fit_command", "eval_command", "ENGINE_LABEL"]

# Shown in the benchmark output so nobody mistakes the stand-in for the engine.
ENGINE_LABEL = "NumPy reference trainer in bench/dltrain_adapter.py (stand-in for the dltrain engine)"


class _NumpyReferenceTrainer:
    """Dense ReLU net, fused softmax/cross-entropy gradient, Adam; float32; in-place updates."""

    beta1 = 0.9
    beta2 = 0.999
    eps = 1e-8

    def __init__(self, layer_sizes: list[int], batch_size: int, lr: float, seed: int) -> None:
        if len(layer_sizes) < 2:
            raise ValueError("layer_sizes needs at least an input and an output size")
        self.layer_sizes = [int(s) for s in layer_sizes]
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.rng = np.random.default_rng(seed)
        f32 = np.float32
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        for fan_in, fan_out in zip(self.layer_sizes[:-1], self.layer_sizes[1:]):
            std = np.sqrt(2.0 / fan_in)  # He init for ReLU layers
            self.weights.append((self.rng.standard_normal((fan_in, fan_out)) * std).astype(f32))
            self.biases.append(np.zeros(fan_out, dtype=f32))
        self.params = [p for pair in zip(self.weights, self.biases) for p in pair]
        self.grads = [np.zeros_like(p) for p in self.params]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.scratch = [np.zeros_like(p) for p in self.params]
        self.step_count = 0

    # -- one step -------------------------------------------------------------
    def _step(self, xb: np.ndarray, yb: np.ndarray) -> float:
        n_layers = len(self.weights)
        b = xb.shape[0]
        acts = [xb]
        pre_masks = []
        a = xb
        for i, (w, bias) in enumerate(zip(self.weights, self.biases)):
            z = a @ w
            z += bias
            if i < n_layers - 1:
                pre_masks.append(z > 0)
                np.maximum(z, 0, out=z)
                acts.append(z)
            a = z
        # softmax + cross-entropy, fused gradient (p - onehot) / b
        logits = a
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        sums = logits.sum(axis=1, keepdims=True)
        logits /= sums
        probs = logits
        rows = np.arange(b)
        picked = probs[rows, yb]
        loss = float(-np.log(np.maximum(picked, np.float32(1e-12))).mean())
        probs[rows, yb] -= 1.0
        probs *= np.float32(1.0 / b)
        delta = probs
        for i in range(n_layers - 1, -1, -1):
            gw = self.grads[2 * i]
            gb = self.grads[2 * i + 1]
            np.matmul(acts[i].T, delta, out=gw)
            np.sum(delta, axis=0, out=gb)
            if i > 0:
                delta = delta @ self.weights[i].T
                delta *= pre_masks[i - 1]
        self._adam()
        return loss

    def _adam(self) -> None:
        self.step_count += 1
        t = self.step_count
        b1, b2 = self.beta1, self.beta2
        bc1 = 1.0 - b1 ** t
        bc2 = 1.0 - b2 ** t
        step = np.float32(self.lr / bc1)
        inv_sqrt_bc2 = np.float32(1.0 / np.sqrt(bc2))
        eps = np.float32(self.eps)
        for p, g, m, v, s in zip(self.params, self.grads, self.m, self.v, self.scratch):
            m *= np.float32(b1)
            m += np.float32(1.0 - b1) * g
            v *= np.float32(b2)
            np.multiply(g, g, out=s)
            s *= np.float32(1.0 - b2)
            v += s
            # p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)   (PyTorch's formulation)
            np.sqrt(v, out=s)
            s *= inv_sqrt_bc2
            s += eps
            np.divide(m, s, out=s)
            s *= step
            p -= s

    # -- one epoch ------------------------------------------------------------
    def train_epoch(self, X: np.ndarray, y: np.ndarray, max_batches: int | None = None) -> float:
        n = X.shape[0]
        order = self.rng.permutation(n)
        total_loss = 0.0
        seen = 0
        for k, start in enumerate(range(0, n, self.batch_size)):
            if max_batches is not None and k >= max_batches:
                break
            idx = order[start:start + self.batch_size]
            xb = X[idx]
            yb = y[idx]
            total_loss += self._step(xb, yb) * xb.shape[0]
            seen += xb.shape[0]
        return total_loss / max(seen, 1)


def make_engine_trainer(layer_sizes: list[int], batch_size: int, lr: float, seed: int) -> object:
    """A trainer for a dense ReLU/softmax net with Adam; see the module docstring for the contract."""
    return _NumpyReferenceTrainer(layer_sizes, batch_size, lr, seed)


def load_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a CSV with a header and a ``label`` column: X float32 [n, features], y int64 [n].

    X holds the raw values of the other columns, not scaled. Reference version:
    np.loadtxt, which is what a user with only NumPy would write.
    """
    path = Path(path)
    with path.open("r", encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
    if "label" not in header:
        raise ValueError(f"{path}: no 'label' column in the header")
    label_col = header.index("label")
    data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)
    y = data[:, label_col].astype(np.int64)
    X = np.ascontiguousarray(np.delete(data, label_col, axis=1))
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
