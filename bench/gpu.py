"""dltrain on the GPU against dltrain on the CPU and PyTorch on both: one table (issue 23).

    python bench/gpu.py                 # on the GPU machine: under 5 minutes
    python bench/gpu.py --quick         # a smoke run anywhere: few steps, the CPU's big net left out

Seconds per epoch of 60,000 rows (synthetic data shaped like Fashion-MNIST: 784 float32
inputs in 0..1, 10 classes; Adam, lr 0.001), measured on the first steps of an epoch after two
warm-up runs of as many steps and scaled to the full epoch (the GPU's side waits for the device
before the clock stops; the 4096-wide net takes a sixth of the steps), for:

- 784-1024-1024-10 at batch 1024 (target: dltrain cuda <= 1.2x PyTorch CUDA);
- 784-4096-4096-4096-10 at batch 4096 (target: <= 1.1x);
- the seed network 784-128-10 at batch 32, 128 and 256, and 784-512-512-10 at batch 256
  (target: ``train.device: auto`` within 10% of the faster of cpu and cuda, on these and the
  two above).

Then `dltrain fit configs/fashion_mnist.yaml` on each device and `dltrain eval` on the test
CSV (target: test accuracy on cuda within 0.005 of the CPU's; needs
`python bench/prepare_fashion_mnist.py`).

Columns without a GPU (CuPy and a device) or without PyTorch are left empty, with a note: the
script runs on any machine. ``AUTO_MIN_MACS`` in src/dltrain/engine/cuda.py is set from this
table; measure it again on the machine that trains.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "src"))

from dltrain.build import array_trainer  # noqa: E402
from dltrain.engine import cuda  # noqa: E402

ROWS, INPUTS, CLASSES, LR = 60_000, 784, 10, 0.001
WORKLOADS = [  # (hidden layers, batch size, the target of the row)
    ([1024, 1024], 1024, "cuda <= 1.2x PyTorch CUDA"),
    ([4096, 4096, 4096], 4096, "cuda <= 1.1x PyTorch CUDA"),
    ([128], 32, ""),
    ([128], 128, ""),
    ([128], 256, ""),
    ([512, 512], 256, ""),
]


def synthetic_data(rows: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((rows, INPUTS), dtype=np.float32), rng.integers(0, CLASSES, rows)


def step_macs(hidden, batch) -> int:
    sizes = [INPUTS, *hidden, CLASSES]
    return batch * sum(a * b for a, b in zip(sizes, sizes[1:]))


def dltrain_epoch(features, targets, hidden, batch, device, steps) -> float:
    """Seconds per epoch of dltrain on ``device``, from ``steps`` timed steps."""
    settings = {
        "seed": 0,
        "model": {"layers": [{"units": units} for units in hidden]},
        "optimizer": {"name": "adam", "lr": LR},
        "train": {"epochs": 1, "batch_size": batch, "device": device},
    }
    trainer = array_trainer(settings, features, targets, [str(label) for label in range(CLASSES)])
    for epoch in (1, 2):  # kernels compiled (on the CPU, for the thread counts it picks), memory pools filled
        trainer.train_epoch(epoch, LR, max_batches=steps)
    # The thread count the engine chose stays: its look at the machine's load before each epoch
    # waits 50 ms, nothing in a whole epoch, a good deal in a few steps scaled up to one.
    trainer.machine_load = None
    started = time.perf_counter()
    trainer.train_epoch(3, LR, max_batches=steps)  # reads its losses back: the device is done
    return (time.perf_counter() - started) / steps * (ROWS / batch)


def torch_epoch(torch, features, targets, hidden, batch, device, steps) -> float:
    """Seconds per epoch of the same network, optimizer and batches in PyTorch on ``device``."""
    torch.manual_seed(0)
    sizes = [INPUTS, *hidden, CLASSES]
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(fan_in, fan_out))
        if index < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.from_numpy(features).to(device)
    y = torch.from_numpy(targets).to(device)
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(features))).to(device)

    def run():
        total = torch.zeros((), device=device)
        for step in range(steps):
            rows = order[step * batch : (step + 1) * batch]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[rows]), y[rows])
            loss.backward()
            optimizer.step()
            total += loss.detach()
        return float(total)  # waits for the device, as dltrain's epoch does

    run()
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) / steps * (ROWS / batch)


def fashion_accuracy(device: str, epochs: int | None) -> float:
    """Test accuracy of `dltrain fit configs/fashion_mnist.yaml --device DEVICE`."""
    with tempfile.TemporaryDirectory(prefix="dltrain-gpu-bench-") as folder:
        run = Path(folder) / "run"
        command = [sys.executable, "-m", "dltrain", "fit", str(REPO_ROOT / "configs" / "fashion_mnist.yaml")]
        command += ["--out", str(run), "--quiet", "--device", device]
        command += ["--set", f"train.epochs={epochs}"] if epochs else []
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        test = REPO_ROOT / "data" / "fashion-mnist" / "test.csv"
        shown = subprocess.run(
            [sys.executable, "-m", "dltrain", "eval", str(run), str(test), "--json", "--device", "cpu"],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(shown.stdout)["accuracy"]


def _seconds(value) -> str:
    return "—" if value is None else (f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps; no CPU timing of the 4096-wide net")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per cell (default 30; 3 with --quick)")
    parser.add_argument("--no-fashion", action="store_true", help="skip the Fashion-MNIST accuracy row")
    args = parser.parse_args(argv)
    steps = args.steps or (3 if args.quick else 30)
    notes = []
    try:
        gpu = cuda.backend()
        notes.append(f"GPU: {gpu.description}")
    except cuda.DeviceUnavailable as error:
        gpu = None
        notes.append(f"dltrain cuda and PyTorch CUDA columns left empty: {error}")
    try:
        import torch
    except ImportError:
        torch = None
        notes.append("PyTorch columns left empty: torch is not installed (pip install '.[bench]')")
    torch_cuda = torch is not None and torch.cuda.is_available()
    if torch is not None and not torch_cuda:
        notes.append("PyTorch CUDA column left empty: torch finds no CUDA device")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    notes.append(f"CPU: {cores} usable cores; PyTorch CPU on {torch.get_num_threads() if torch else '-'} threads")

    columns = ["workload", "dltrain cuda", "dltrain cpu", "PyTorch CUDA", "PyTorch CPU", "auto picks", "auto / faster"]
    rows = ["| " + " | ".join([*columns, "target", "met"]) + " |", "|" + "---|" * 9]
    for hidden, batch, target in WORKLOADS:
        name = "-".join(map(str, [INPUTS, *hidden, CLASSES])) + f", batch {batch}"
        full_steps = steps
        if step_macs(hidden, batch) > 10**10:  # the 4096-wide net: ~1 s a step on 16 CPU cores
            steps = max(3, full_steps // 6)
        features, targets = synthetic_data(max(batch * (3 * steps + 1), 2 * batch), seed=batch)
        big_on_cpu = args.quick and step_macs(hidden, batch) > 10**10
        times = {
            "cuda": dltrain_epoch(features, targets, hidden, batch, "cuda", steps) if gpu else None,
            "cpu": None if big_on_cpu else dltrain_epoch(features, targets, hidden, batch, "cpu", steps),
            "torch cuda": torch_epoch(torch, features, targets, hidden, batch, "cuda", steps) if torch_cuda else None,
            "torch cpu": None
            if torch is None or big_on_cpu
            else torch_epoch(torch, features, targets, hidden, batch, "cpu", steps),
        }
        if big_on_cpu:
            notes.append(f"{name}: CPU columns left out with --quick")
        picked, _ = cuda.choose("auto", step_macs(hidden, batch)) if gpu else (None, "")
        pick = "cuda" if picked is not None else "cpu"
        measured = [value for value in (times["cuda"], times["cpu"]) if value is not None]
        ratio = times[pick] / min(measured) if times[pick] is not None and len(measured) == 2 else None
        met = "—"
        if target and times["cuda"] is not None and times["torch cuda"] is not None:
            limit = 1.2 if "1.2" in target else 1.1
            met = "✓" if times["cuda"] / times["torch cuda"] <= limit else "✗"
            target += f" ({times['cuda'] / times['torch cuda']:.2f}x)"
        auto_met = "—" if ratio is None else ("✓" if ratio <= 1.10 else "✗")
        target = f"{target}; auto within 10%" if target else "auto within 10%"
        rows.append(
            f"| {name} | {_seconds(times['cuda'])} | {_seconds(times['cpu'])} | {_seconds(times['torch cuda'])} "
            f"| {_seconds(times['torch cpu'])} | {pick} | {'—' if ratio is None else f'{ratio:.2f}x'} "
            f"| {target} | {met} {auto_met} |"
        )
        print(rows[-1], flush=True)
        steps = full_steps
    if not args.no_fashion and (REPO_ROOT / "data" / "fashion-mnist" / "train.csv").is_file():
        epochs = 1 if args.quick else None
        cpu_accuracy = fashion_accuracy("cpu", epochs)
        cuda_accuracy = fashion_accuracy("cuda", epochs) if gpu else None
        difference = None if cuda_accuracy is None else abs(cuda_accuracy - cpu_accuracy)
        rows.append(
            f"| fashion_mnist.yaml{' (1 epoch)' if epochs else ''}: test accuracy | "
            f"{'—' if cuda_accuracy is None else f'{cuda_accuracy:.4f}'} | {cpu_accuracy:.4f} | | | | | "
            f"cuda within 0.005 of cpu | {'—' if difference is None else ('✓' if difference <= 0.005 else '✗')} |"
        )
    elif not args.no_fashion:
        notes.append("Fashion-MNIST accuracy left out: run python bench/prepare_fashion_mnist.py first")
    print()
    print("\n".join(rows))
    print()
    print("\n".join(f"- {note}" for note in notes))
    print(f"- Seconds per epoch of {ROWS:,} rows, from {steps} timed steps after two warm-up runs of as many.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
