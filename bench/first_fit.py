"""The first fit after a fresh install against the second: the compile wait on the first fit.

    python bench/prepare_fashion_mnist.py            # once: data/fashion-mnist/*.csv
    python bench/first_fit.py [--rounds 5] [--config configs/fashion_mnist.yaml] [--epochs 1]
                              [--set KEY=VALUE ...] [--against OTHER/.venv/bin/python]

Each round empties a numba cache folder of its own (NUMBA_CACHE_DIR, as a fresh install has
no compiled kernels), runs `dltrain fit CONFIG --set train.epochs=N --quiet` in a fresh process
(the first fit), then the same again (the second). Each fit's helper processes (those that
compile kernels into the cache while a fit goes on without them) are waited for before the
next fit starts, so the second fit meets the cache they filled, and a helper never writes into
the next round's empty cache; how long they ran on after their fit ended is printed. The
parsed-data cache (DLTRAIN_CACHE_DIR, a folder of its own) is warmed before the first round, so
both fits read the training data the same way and differ only by the kernels (the test CSV is
parsed by every fit). Prints the wall times, their medians, the median of the per-round
differences (first - second) and ratios, and anything a fit wrote on stderr (nothing is
expected: a warning there is a bug). The target of issue 23: first - second <= 1 s.

--against names the Python of another install of dltrain (an earlier commit installed in a
virtual environment of its own, say): each round then times it too, right after this one, with
a numba cache of its own, and the medians are printed for both.

On a shared machine, run it with nothing else running: the fits compete with other
processes for the cores.
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
HELPERS_TIMEOUT = 600.0


def fit_seconds(python: str, config: Path, settings: list, out: Path, environ: dict) -> tuple[float, float]:
    """The fit's wall time, and how long its helper processes ran on after it ended."""
    command = [python, "-m", "dltrain", "fit", str(config)]
    for setting in settings:
        command += ["--set", setting]
    command += ["--out", str(out), "--force", "--quiet"]
    started = time.perf_counter()
    # A session of its own: its helpers (started by it, never in a session of their own) are
    # the processes left in its process group (numbered as the fit) once it has ended.
    fit = subprocess.Popen(
        command, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    _, errors = fit.communicate()
    ended = time.perf_counter()
    if errors.strip():
        print(f"the fit wrote on stderr:\n{errors.decode(errors='replace')}", file=sys.stderr, flush=True)
    if fit.returncode:
        raise SystemExit(f"the fit failed (exit code {fit.returncode})")
    _wait_for_group(fit.pid)
    return ended - started, time.perf_counter() - ended


def _living_in_group(group: int) -> bool:
    """Whether a process other than a zombie is in process group ``group`` (Linux's /proc)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def _wait_for_group(group: int) -> None:
    deadline = time.monotonic() + HELPERS_TIMEOUT
    while group and _living_in_group(group):
        if time.monotonic() > deadline:
            raise SystemExit(f"a fit's helper processes (group {group}) still run after {HELPERS_TIMEOUT:.0f} s")
        time.sleep(0.05)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "fashion_mnist.yaml")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], help="also --set this (data.test=null: no test CSV)")
    parser.add_argument("--against", help="the Python of another install of dltrain, timed alongside")
    args = parser.parse_args(argv)
    if not (REPO_ROOT / "data" / "fashion-mnist" / "train.csv").is_file() and "fashion" in args.config.name:
        print("data/fashion-mnist/ not found: run `python bench/prepare_fashion_mnist.py` first.", file=sys.stderr)
        return 2
    if not Path("/proc/self/stat").is_file():
        print("this bench finds the fits' helper processes in /proc (Linux)", file=sys.stderr)
        return 2
    settings = [f"train.epochs={args.epochs}", *args.set]
    folder = Path(tempfile.mkdtemp(prefix="dltrain-first-fit-"))
    out = folder / "run"
    pythons = {"this": sys.executable} if args.against is None else {"this": sys.executable, args.against: args.against}
    environs = {}
    for number, name in enumerate(pythons):
        environ = {**os.environ, "NUMBA_CACHE_DIR": str(folder / f"numba{number}")}
        environ["DLTRAIN_CACHE_DIR"] = str(folder / "data")
        environs[name] = environ
    times: dict = {name: ([], []) for name in pythons}
    try:
        for name, environ in environs.items():  # the data cache and the page cache, warm
            fit_seconds(pythons[name], args.config, settings, out, environ)
        for round_number in range(1, args.rounds + 1):
            for name, environ in environs.items():
                shutil.rmtree(environ["NUMBA_CACHE_DIR"], ignore_errors=True)
                first, first_helpers = fit_seconds(pythons[name], args.config, settings, out, environ)
                second, second_helpers = fit_seconds(pythons[name], args.config, settings, out, environ)
                times[name][0].append(first)
                times[name][1].append(second)
                print(
                    f"round {round_number}, {name}: first {first:.2f} s (its helpers ran {first_helpers:.1f} s more), "
                    f"second {second:.2f} s (helpers {second_helpers:.1f} s more); load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for name, (firsts, seconds) in times.items():
        differences = [first - second for first, second in zip(firsts, seconds)]
        ratios = [first / second for first, second in zip(firsts, seconds)]
        print(
            f"median, {name}: first {statistics.median(firsts):.2f} s, second {statistics.median(seconds):.2f} s; "
            f"first - second {statistics.median(differences):.2f} s (target <= 1 s), "
            f"first / second {statistics.median(ratios):.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
