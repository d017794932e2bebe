"""The first fit after a fresh install against the second: the compile wait on the first fit.

    python bench/prepare_fashion_mnist.py            # once: data/fashion-mnist/*.csv
    python bench/first_fit.py [--rounds 5] [--config configs/fashion_mnist.yaml] [--epochs 1]

Each round empties a numba cache folder of its own (NUMBA_CACHE_DIR, as a fresh install has
no compiled kernels), runs `dltrain fit CONFIG --set train.epochs=N --quiet` (the first fit:
every kernel compiled), then the same again (the second: every kernel loaded from the cache).
The data cache is warmed before the first round, so both fits read the data the same way and
differ only by the kernels. Prints the wall times, their medians, and the median of the
per-round differences (first - second) and ratios. The target of issue 23: first - second <= 1 s.

On a shared machine, run it with nothing else running: the fits compete with other
processes for the cores the kernels compile on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def fit_seconds(config: Path, epochs: int, out: Path, cache: Path) -> float:
    environ = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    command = [sys.executable, "-m", "dltrain", "fit", str(config), "--set", f"train.epochs={epochs}"]
    command += ["--out", str(out), "--force", "--quiet"]
    started = time.perf_counter()
    subprocess.run(command, check=True, env=environ, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "fashion_mnist.yaml")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if not (REPO_ROOT / "data" / "fashion-mnist" / "train.csv").is_file() and "fashion" in args.config.name:
        print("data/fashion-mnist/ not found: run `python bench/prepare_fashion_mnist.py` first.", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="dltrain-first-fit-"))
    cache, out = folder / "numba", folder / "run"
    try:
        fit_seconds(args.config, args.epochs, out, cache)  # the data cache and the page cache, warm
        firsts, seconds = [], []
        for round_number in range(1, args.rounds + 1):
            shutil.rmtree(cache, ignore_errors=True)
            firsts.append(fit_seconds(args.config, args.epochs, out, cache))
            seconds.append(fit_seconds(args.config, args.epochs, out, cache))
            print(f"round {round_number}: first {firsts[-1]:.2f} s, second {seconds[-1]:.2f} s", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    differences = [first - second for first, second in zip(firsts, seconds)]
    ratios = [first / second for first, second in zip(firsts, seconds)]
    print(
        f"median: first {statistics.median(firsts):.2f} s, second {statistics.median(seconds):.2f} s; "
        f"first - second {statistics.median(differences):.2f} s (target <= 1 s), "
        f"first / second {statistics.median(ratios):.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
