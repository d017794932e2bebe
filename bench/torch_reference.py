"""What a user would write without dltrain: pandas + PyTorch on the Fashion-MNIST CSV.

Reads data/fashion-mnist/train.csv with pandas.read_csv, scales the pixels to
0..1 and trains the seed model (784 -> 128 ReLU -> 10, softmax cross-entropy,
Adam lr 0.001) on the CPU in float32, batch 32, reshuffling every epoch.

    python bench/torch_reference.py --epochs 10

bench/run.py times this script as a subprocess for the end-to-end comparison,
and imports ``TorchTrainer`` from it for the per-epoch comparison, so both use
exactly the same PyTorch training loop. ``TorchTrainer`` follows the trainer
contract described in bench/dltrain_adapter.py (same permutation scheme: a fresh
``numpy.random.default_rng(seed).permutation`` per epoch, consecutive batches).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT / "data" / "fashion-mnist" / "train.csv"


def build_model(layer_sizes: list[int]) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(layer_sizes[:-1], layer_sizes[1:])):
        layers.append(torch.nn.Linear(fan_in, fan_out))
        if i < len(layer_sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


class TorchTrainer:
    """torch.nn.Sequential + torch.optim.Adam + cross-entropy, float32 on the CPU."""

    def __init__(self, layer_sizes: list[int], batch_size: int, lr: float, seed: int) -> None:
        torch.manual_seed(seed)
        self.batch_size = int(batch_size)
        self.rng = np.random.default_rng(seed)
        self.model = build_model(list(layer_sizes)).to(dtype=torch.float32)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def train_epoch(self, X: np.ndarray, y: np.ndarray, max_batches: int | None = None) -> float:
        X_t = torch.from_numpy(X)
        y_t = torch.from_numpy(y)
        n = X_t.shape[0]
        order = torch.from_numpy(self.rng.permutation(n))
        self.model.train()
        total_loss = 0.0
        seen = 0
        for k, start in enumerate(range(0, n, self.batch_size)):
            if max_batches is not None and k >= max_batches:
                break
            idx = order[start : start + self.batch_size]
            xb = X_t[idx]
            yb = y_t[idx]
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(xb), yb)
            loss.backward()
            self.optimizer.step()
            total_loss += loss.item() * xb.shape[0]
            seen += xb.shape[0]
        return total_loss / max(seen, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="pandas + PyTorch reference training on Fashion-MNIST")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    import pandas as pd

    start = time.perf_counter()
    df = pd.read_csv(args.data)
    # pandas >= 3 hands out read-only views (copy-on-write), and to_numpy() of a
    # DataFrame is column-major: build a new, writable, row-major array so that
    # gathering a batch of rows is a contiguous copy.
    X = np.ascontiguousarray(df.drop(columns=["label"]).to_numpy(dtype=np.float32)) / np.float32(255.0)
    y = np.array(df["label"], dtype=np.int64)
    del df
    trainer = TorchTrainer([X.shape[1], 128, 10], args.batch_size, args.lr, args.seed)
    for epoch in range(1, args.epochs + 1):
        loss = trainer.train_epoch(X, y)
        if not args.quiet:
            print(f"epoch {epoch}/{args.epochs}  loss {loss:.4f}")
    if not args.quiet:
        print(f"trained {args.epochs} epoch(s) on {X.shape[0]} rows in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
