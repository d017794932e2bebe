"""Benchmark the dltrain engine against PyTorch (CPU) and scikit-learn on Fashion-MNIST.

    python bench/prepare_fashion_mnist.py      # once: writes data/fashion-mnist/*.csv
    python bench/run.py                        # full run, writes docs/benchmarks.md
    python bench/run.py --quick                # smoke run: few batches, few runs, 1 e2e epoch

Optional dependencies: ``pip install -e '.[bench]'`` (torch==2.13.0 CPU build,
scikit-learn, pandas, threadpoolctl). A missing one skips the parts that need it,
with a one-line reason. Every call into the dltrain engine goes through
bench/dltrain_adapter.py.

Sections (one table, ratios are dltrain / reference, lower is better unless noted):
  1. engine  - time per training epoch on the 60,000 training rows: seed model
               784-128-10 at batch 32, 128, 256 and 784-512-512-10 at batch 256,
               against PyTorch (torch.nn.Sequential + Adam) and scikit-learn's
               MLPClassifier (adam, one epoch = one partial_fit call);
  2. flops   - achieved GFLOP/s of the engine against a float32 matmul peak
               measured here (2048x2048 @ 2048x2048 with NumPy);
  3. e2e     - wall time and peak RSS of `dltrain fit configs/fashion_mnist.yaml`
               against bench/torch_reference.py (pandas + PyTorch), and the test
               accuracy from `dltrain eval --json` when 10 epochs were trained;
  4. csv     - the engine's CSV loader against pandas.read_csv on train.csv;
  5. threads - the engine at batch 32 with 1 BLAS thread against all threads;
  6. busy    - with one more CPU-bound process running: the engine's own thread choice
               against serial kernels (and PyTorch), at batch 256;
  7. paths   - the engine's fused kernels against its reference NumPy path (does the
               fast path pay?);
  8. step    - where a training step's time goes at batch 256 (gather, products, the
               layers' other work, loss, recorded predictions, optimizer), each part
               against the products-only floor.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# dltrain sets its thread pools up itself before NumPy loads, as `dltrain fit` does. What it
# set is remembered: the OpenMP variables are taken out again before PyTorch loads, so that
# PyTorch runs with its own defaults.
_ENVIRONMENT_BEFORE = dict(os.environ)
import dltrain  # noqa: E402,F401

DLTRAIN_THREAD_SETTINGS = {name: value for name, value in os.environ.items() if _ENVIRONMENT_BEFORE.get(name) != value}

import numpy as np  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import dltrain_adapter as adapter  # noqa: E402

TRAIN_CSV = REPO_ROOT / "data" / "fashion-mnist" / "train.csv"
TEST_CSV = REPO_ROOT / "data" / "fashion-mnist" / "test.csv"
E2E_CONFIG = Path("configs") / "fashion_mnist.yaml"  # relative to the repo root (the children's cwd)
DEFAULT_OUTPUT = Path("docs") / "benchmarks.md"
# From this line on, the document is written by other scripts (bench/startup.py) and kept here.
KEPT_MARKER = "<!-- kept by bench/run.py: the sections below are written by other scripts -->"

SEED_MODEL = [784, 128, 10]
WIDE_MODEL = [784, 512, 512, 10]
ENGINE_CASES = [(SEED_MODEL, 32), (SEED_MODEL, 128), (SEED_MODEL, 256), (WIDE_MODEL, 256)]
LR = 1e-3
NUM_CLASSES = 10

# Targets (ratio = dltrain / reference), on 2 cores (issue 12).
TORCH_RATIO_TARGET = {
    ("784-128-10", 32): 0.6,
    ("784-128-10", 128): 0.5,
    ("784-128-10", 256): 0.5,
    ("784-512-512-10", 256): 0.7,
}
FLOOR_RATIO_TARGET = 1.5  # epoch time at batch 256 against its matrix products alone
BUSY_RATIO_TARGET = 1.5  # with another CPU-bound process: the engine's choice against serial kernels
PEAK_FRACTION_TARGET = 0.5  # at batch 256
E2E_RATIO_TARGET = 0.6
ACCURACY_TARGET = 0.87
ACCURACY_EPOCHS = 10
MEMORY_SLACK_BYTES = 150e6
PEAK_MATMUL_N = 2048
PEAK_MATMUL_REPEATS = 15
SECTIONS = ("engine", "flops", "e2e", "csv", "threads", "busy", "paths", "step")
STEP_PARTS = {
    "gather": "gather the shuffled batch rows",
    "products": "matrix products, inside the step",
    "layers": "bias, activations and their gradients",
    "loss": "loss and its gradient",
    "record": "keep the batch's predictions (for the epoch's metrics)",
    "optimizer": "optimizer update (and gradient norm)",
    "other": "the loop's own Python",
}
MB = 1e6  # memory is reported in MB = 10^6 bytes


# --------------------------------------------------------------------------- helpers
def optional_import(name: str, label: str | None = None):
    """(module, None) or (None, one-line reason)."""
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # ImportError, or a broken install
        detail = str(exc).splitlines()[0] if str(exc) else ""
        return None, f"{label or name} not installed or not importable ({type(exc).__name__}: {detail})"


def median_time(fn: Callable[[], object], runs: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn`` over ``runs`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}×"


def mark(ok: bool | None) -> str:
    return "" if ok is None else ("✓" if ok else "✗")


def model_name(sizes: list[int]) -> str:
    return "-".join(str(s) for s in sizes)


def flops_per_sample(sizes: list[int]) -> int:
    """FLOPs of one training step per sample: forward, dW and (except layer 1) d-input products, 2·m·n·k each."""
    total = 0
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        products = 2 if i == 0 else 3
        total += products * 2 * fan_in * fan_out
    return total


def n_batches(n: int, batch: int) -> int:
    return -(-n // batch)


@dataclass
class Row:
    section: str
    what: str
    ours: str = "—"
    ref: str = "—"
    ratio: str = "—"
    target: str = ""
    ok: bool | None = None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *args, **kwargs) -> None:
        self.rows.append(Row(*args, **kwargs))

    def skip(self, section: str, reason: str) -> None:
        self.rows.append(Row(section, f"skipped: {reason}"))
        print(f"[{section}] skipped: {reason}", flush=True)

    def table(self) -> str:
        lines = [
            "| section | benchmark | dltrain | reference | ratio | target | met |",
            "|---|---|---:|---:|---:|---|:-:|",
        ]
        for r in self.rows:
            lines.append(f"| {r.section} | {r.what} | {r.ours} | {r.ref} | {r.ratio} | {r.target} | {mark(r.ok)} |")
        return "\n".join(lines)


def log(section: str, msg: str) -> None:
    print(f"[{section}] {msg}", flush=True)


# --------------------------------------------------------------------------- data
def load_training_data() -> tuple[np.ndarray, np.ndarray]:
    """Train CSV as X float32 in 0..1 and y int64, read with NumPy only (independent of the adapter)."""
    with TRAIN_CSV.open("r", encoding="ascii") as fh:
        header = fh.readline().strip().split(",")
    if header[0] != "label":
        raise SystemExit(f"{TRAIN_CSV.relative_to(REPO_ROOT)}: expected 'label' as the first column.")
    raw = np.loadtxt(TRAIN_CSV, delimiter=",", skiprows=1, dtype=np.uint8)
    y = raw[:, 0].astype(np.int64)
    X = raw[:, 1:].astype(np.float32)
    X /= np.float32(255.0)
    return np.ascontiguousarray(X), y


# --------------------------------------------------------------------------- machine info
def cpu_counters() -> tuple[float, float, float, float] | None:
    """(machine busy s, steal s, this process + waited children CPU s, wall s) so far, or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = [int(v) for v in fields]
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
    steal = ticks[7] if len(ticks) > 7 else 0
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    return (user + nice + system + irq + softirq) / hz, steal / hz, own, time.monotonic()


def other_load(start, end) -> tuple[float, float] | None:
    """Share of the machine's CPU capacity used by other processes, and stolen by the hypervisor."""
    if start is None or end is None:
        return None
    capacity = (end[3] - start[3]) * (os.cpu_count() or 1)
    if capacity <= 0:
        return None
    others = (end[0] - start[0]) - (end[2] - start[2])
    return max(others, 0.0) / capacity, (end[1] - start[1]) / capacity


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    info: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    name = info.get("model name", platform.processor() or "unknown")
    extra = []
    if "cpu family" in info and "model" in info:
        extra.append(f"family {info['cpu family']} model {info['model']}")
    flags = set(info.get("flags", "").split())
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    if simd:
        extra.append("/".join(simd))
    return f"{name} ({', '.join(extra)})" if extra else name


def mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def blas_description(threadpoolctl) -> list[str]:
    if threadpoolctl is None:
        return ["threadpoolctl not installed: BLAS library and threads unknown"]
    lines = []
    for lib in threadpoolctl.threadpool_info():
        path = Path(lib.get("filepath", ""))
        # Only the last folders (e.g. torch/lib/libgomp.so.1): no absolute paths of this machine in the report.
        keep = 3 if path.parent.name == "lib" else 2
        where = "/".join(path.parts[-keep:]) if path.name else "?"
        parts = [f"{lib.get('internal_api')} {lib.get('version') or ''}".strip(), f"`{where}`"]
        if lib.get("architecture"):
            parts.append(f"kernel {lib['architecture']}")
        if lib.get("threading_layer"):
            parts.append(f"threading {lib['threading_layer']}")
        parts.append(f"{lib.get('num_threads')} threads")
        lines.append(", ".join(parts))
    return lines or ["no BLAS/OpenMP library loaded"]


def numpy_blas_build() -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version', '')}".strip()
    except Exception:
        return "unknown"


# --------------------------------------------------------------------------- sections
def measure_peak() -> tuple[float, float, float]:
    """float32 matmul GFLOP/s with NumPy on all threads: (median, slowest, fastest) over the repeats."""
    n = PEAK_MATMUL_N
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    med, times = median_time(lambda: np.matmul(a, b, out=out), PEAK_MATMUL_REPEATS, warmup=3)
    flop = 2 * n**3
    return flop / med / 1e9, flop / max(times) / 1e9, flop / min(times) / 1e9


def time_trainers_side_by_side(trainers: dict, batch, X, y, max_batches, runs) -> tuple[dict, bool]:
    """Median seconds per (full, or scaled-to-full) epoch for each trainer, timed in turn
    (A B A B ...) so that a machine drifting in speed slows every side alike."""
    n = X.shape[0]
    rows = n if max_batches is None else min(n, max_batches * batch)
    scale = n / rows
    times = {name: [] for name in trainers}
    for trainer in trainers.values():  # warm-up
        trainer.train_epoch(X, y, max_batches)
    for _ in range(runs):
        for name, trainer in trainers.items():
            gc.collect()
            t0 = time.perf_counter()
            loss = trainer.train_epoch(X, y, max_batches)
            times[name].append(time.perf_counter() - t0)
            if not np.isfinite(loss):
                raise RuntimeError(f"{name}: training loss is {loss}")
    return {name: statistics.median(values) * scale for name, values in times.items()}, scale != 1.0


class ProductsOnly:
    """The matrix products of one training step and nothing else, per batch of an epoch.

    Forward ``x @ W`` for every layer, ``x.T @ delta`` for every weight gradient and
    ``delta @ W.T`` for every input gradient but the first, on preallocated float32 arrays
    with the BLAS threads the engine would pick (each epoch, as it does). No gathering, activations, loss or
    optimizer: its epoch time is a floor for any engine that leaves its products to NumPy
    and OpenBLAS, so ``floor / PyTorch`` is the best ratio such an engine can reach here."""

    def __init__(self, layer_sizes: list[int], batch_size: int) -> None:
        rng = np.random.default_rng(0)
        self.batch_size = batch_size
        self.choose_threads = adapter.engine_thread_chooser(layer_sizes, batch_size)
        self.weights = [
            rng.standard_normal((a, b), dtype=np.float32) * 0.01 for a, b in zip(layer_sizes[:-1], layer_sizes[1:])
        ]
        self.grads = [np.empty_like(w) for w in self.weights]
        self.buffers: dict[int, tuple[list, list]] = {}

    def _arrays(self, rows: int):
        if rows not in self.buffers:
            rng = np.random.default_rng(1)
            acts = [rng.random((rows, w.shape[0]), dtype=np.float32) for w in self.weights]
            deltas = [rng.random((rows, w.shape[1]), dtype=np.float32) for w in self.weights]
            self.buffers[rows] = (acts, deltas, [np.empty((rows, w.shape[1]), np.float32) for w in self.weights])
        return self.buffers[rows]

    def train_epoch(self, X, y, max_batches=None) -> float:
        from threadpoolctl import threadpool_limits

        n = X.shape[0]
        with threadpool_limits(self.choose_threads(), user_api="blas"):
            for k, start in enumerate(range(0, n, self.batch_size)):
                if max_batches is not None and k >= max_batches:
                    break
                acts, deltas, outs = self._arrays(min(self.batch_size, n - start))
                for w, a, out in zip(self.weights, acts, outs):
                    np.matmul(a, w, out=out)
                for i in range(len(self.weights) - 1, -1, -1):
                    np.matmul(acts[i].T, deltas[i], out=self.grads[i])
                    if i > 0:
                        np.matmul(deltas[i], self.weights[i].T, out=acts[i])
        return 0.0


def section_engine(report, X, y, args, torch_ref, sklearn_nn, peaks):
    """Sections 1 and 2. Returns nothing; adds rows."""
    n = X.shape[0]
    engine_times: dict[tuple[str, int], float] = {}
    torch_times: dict[tuple[str, int], float] = {}
    floor_times: dict[tuple[str, int], float] = {}
    scaled_any = False
    if "engine" not in args.sections:  # only the GFLOP/s rows were asked for
        torch_ref = sklearn_nn = None
    for sizes, batch in ENGINE_CASES:
        key = (model_name(sizes), batch)
        try:
            trainers = {"dltrain": adapter.make_engine_trainer(list(sizes), batch, LR, args.seed)}
            if torch_ref is not None:
                trainers["PyTorch"] = torch_ref.TorchTrainer(list(sizes), batch, LR, args.seed)
                if batch == 256:
                    trainers["products"] = ProductsOnly(list(sizes), batch)
            medians, scaled = time_trainers_side_by_side(trainers, batch, X, y, args.max_batches, args.runs)
            engine_times[key] = medians["dltrain"]
            scaled_any |= scaled
            log("engine", f"dltrain {key[0]} batch {batch}: {fmt_s(medians['dltrain'])} / epoch")
            if "PyTorch" in medians:
                torch_times[key] = medians["PyTorch"]
                log("engine", f"PyTorch {key[0]} batch {batch}: {fmt_s(medians['PyTorch'])} / epoch")
            if "products" in medians:
                floor_times[key] = medians["products"]
                log("engine", f"products only {key[0]} batch {batch}: {fmt_s(medians['products'])} / epoch")
        except Exception as exc:
            report.notes.append(f"engine {key[0]} batch {batch} failed: {type(exc).__name__}: {exc}")
            log("engine", f"{key[0]} batch {batch} FAILED: {exc}")
            traceback.print_exc()

    sk_times: dict[tuple[str, int], float] = {}
    if sklearn_nn is not None:
        for sizes, batch in ENGINE_CASES:
            key = (model_name(sizes), batch)
            total = n_batches(n, batch)
            used = total if args.max_batches is None else min(args.max_batches, total)
            rows = n if used == total else used * batch
            Xs, ys = X[:rows], y[:rows]
            clf = sklearn_nn.MLPClassifier(
                hidden_layer_sizes=tuple(sizes[1:-1]),
                activation="relu",
                solver="adam",
                alpha=0.0,
                batch_size=batch,
                learning_rate_init=LR,
                beta_1=0.9,
                beta_2=0.999,
                epsilon=1e-8,
                shuffle=True,
                random_state=args.seed,
            )
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    clf.partial_fit(Xs, ys, classes=np.arange(NUM_CLASSES))  # initialises; also the warm-up
                    med, _ = median_time(lambda clf=clf, Xs=Xs, ys=ys: clf.partial_fit(Xs, ys), args.runs, warmup=0)
            except Exception as exc:
                report.notes.append(f"scikit-learn {key[0]} batch {batch} failed: {type(exc).__name__}: {exc}")
                continue
            if clf.coefs_[0].dtype != np.float32:
                report.notes.append(f"scikit-learn trained in {clf.coefs_[0].dtype}, not float32")
            sk_times[key] = med * (n / rows)
            log("engine", f"scikit-learn {key[0]} batch {batch}: {fmt_s(sk_times[key])} / epoch")

    for sizes, batch in ENGINE_CASES if "engine" in args.sections else []:
        key = (model_name(sizes), batch)
        ours = engine_times.get(key)
        target = TORCH_RATIO_TARGET.get(key)
        label = f"epoch time, {key[0]}, batch {batch}"
        if torch_ref is not None:
            ref = torch_times.get(key)
            ratio = ours / ref if ours is not None and ref is not None else None
            report.add(
                "1 engine",
                f"{label} vs PyTorch",
                fmt_s(ours),
                fmt_s(ref),
                fmt_ratio(ratio),
                f"≤ {target}×",
                None if ratio is None else ratio <= target,
            )
            floor = floor_times.get(key)
            if floor is not None and ref is not None:
                report.add(
                    "1 engine",
                    f"floor: that step's matrix products alone (NumPy), {key[0]}, batch {batch}, vs PyTorch",
                    fmt_s(floor),
                    fmt_s(ref),
                    fmt_ratio(floor / ref),
                )
            if floor is not None and ours is not None:
                report.add(
                    "1 engine",
                    f"{label} vs its matrix products alone",
                    fmt_s(ours),
                    fmt_s(floor),
                    fmt_ratio(ours / floor),
                    f"≤ {FLOOR_RATIO_TARGET}×",
                    ours / floor <= FLOOR_RATIO_TARGET,
                )
        if sklearn_nn is not None:
            ref = sk_times.get(key)
            ratio = ours / ref if ours is not None and ref is not None else None
            report.add("1 engine", f"{label} vs scikit-learn MLPClassifier", fmt_s(ours), fmt_s(ref), fmt_ratio(ratio))
        if torch_ref is None and sklearn_nn is None:
            report.add("1 engine", label, fmt_s(ours))
    if torch_ref is None and args.reasons["torch"]:
        report.notes.append(f"PyTorch comparison skipped: {args.reasons['torch']}")
    if sklearn_nn is None and args.reasons["sklearn"]:
        report.notes.append(f"scikit-learn comparison skipped: {args.reasons['sklearn']}")
    if scaled_any:
        report.notes.append(
            f"Epoch times are measured on the first {args.max_batches} batches of each epoch and scaled "
            f"to a full epoch of {n} rows (scikit-learn: one partial_fit on the first "
            f"{args.max_batches}·batch rows, scaled the same way)."
        )

    # Section 2: achieved GFLOP/s.
    if peaks is not None:
        peaks.append(measure_peak())
        log("flops", f"float32 matmul peak (after): {peaks[1][0]:.1f} GFLOP/s")
        peak = max(p[0] for p in peaks)
        report.notes.append(
            f"float32 matmul peak ({PEAK_MATMUL_N}³, NumPy, all threads): median of {PEAK_MATMUL_REPEATS} "
            "products, measured before and after the engine timings: "
            + "; ".join(f"{p[0]:.1f} GFLOP/s (single products {p[1]:.0f}–{p[2]:.0f})" for p in peaks)
            + f". The higher median, {peak:.1f} GFLOP/s, is the peak used."
        )
        for sizes, batch in ENGINE_CASES:
            key = (model_name(sizes), batch)
            ours = engine_times.get(key)
            gflops = flops_per_sample(sizes) * n / ours / 1e9 if ours else None
            frac = gflops / peak if gflops else None
            if frac is not None and frac > 1.0 and not any("above 100%" in note for note in report.notes):
                report.notes.append(
                    "A share of peak above 100% means the machine was slower while the peak was measured "
                    "than during the training run (noisy shared machine): rerun before trusting section 2."
                )
            target = f"≥ {PEAK_FRACTION_TARGET:.0%} of peak" if batch == 256 else ""
            ok = (frac >= PEAK_FRACTION_TARGET) if (batch == 256 and frac is not None) else None
            report.add(
                "2 flops",
                f"GFLOP/s, {key[0]}, batch {batch} vs float32 matmul peak",
                "—" if gflops is None else f"{gflops:.1f} GFLOP/s",
                f"{peak:.1f} GFLOP/s",
                "—" if frac is None else f"{frac:.0%}",
                target,
                ok,
            )


RSS_MARK = "peak-rss-kib="


def run_child(argv: list[str], cwd: Path) -> dict:
    """Run a command; wall time, peak RSS (this child and its waited-for descendants) and exit status."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        # Through /usr/bin/time: Linux keeps a process's peak RSS across exec, so a child
        # forked straight from this (large) benchmark process would report our memory too.
        timed = Path("/usr/bin/time").exists()
        command = ["/usr/bin/time", "-f", f"{RSS_MARK}%M"] + argv if timed else argv
        proc = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
        maxrss = usage.ru_maxrss * 1024  # Linux reports KiB
        if timed and RSS_MARK in stderr:
            stderr, _, reported = stderr.rpartition(RSS_MARK)
            maxrss = int(reported.strip()) * 1024
        return {
            "wall": wall,
            "maxrss": maxrss,
            "rc": proc.returncode,
            "stdout": out.read().decode("utf-8", "replace"),
            "stderr": stderr,
        }


def timed_child_runs(section: str, name: str, argv: list[str], runs: int, warmup: int) -> dict | None:
    results = []
    for i in range(warmup + runs):
        r = run_child(argv, REPO_ROOT)
        if r["rc"] != 0:
            tail = (r["stderr"].strip().splitlines() or r["stdout"].strip().splitlines() or ["no output"])[-1]
            log(section, f"{name} failed (exit {r['rc']}): {tail}")
            return {"error": f"{name} failed (exit {r['rc']}): {tail}"}
        if i >= warmup:
            results.append(r)
            log(section, f"{name} run {i - warmup + 1}/{runs}: {r['wall']:.2f} s, peak RSS {r['maxrss'] / MB:.0f} MB")
    return {
        "wall": statistics.median(r["wall"] for r in results),
        "maxrss": max(r["maxrss"] for r in results),
        "last": results[-1],
    }


def config_epochs() -> int | None:
    try:
        import yaml  # dltrain's own dependency

        cfg = yaml.safe_load((REPO_ROOT / E2E_CONFIG).read_text())
        return int(cfg["train"]["epochs"])
    except Exception:
        return None


def find_accuracy(obj) -> float | None:
    if isinstance(obj, dict):
        if isinstance(obj.get("accuracy"), (int, float)):
            return float(obj["accuracy"])
        for value in obj.values():
            found = find_accuracy(value)
            if found is not None:
                return found
    return None


def section_e2e(report: Report, args, n_rows: int, n_features: int) -> None:
    sec = "3 e2e"
    if shutil.which("dltrain") is None:
        report.skip(sec, "dltrain not installed")
        return
    if not (REPO_ROOT / E2E_CONFIG).is_file():
        report.skip(sec, f"{E2E_CONFIG.as_posix()} not found")
        return
    if args.e2e_epochs is not None:
        epochs, pass_epochs = args.e2e_epochs, args.e2e_epochs
    else:
        epochs = config_epochs()
        pass_epochs = None
        if epochs is None:  # cannot read the config's number: set it, so both sides agree
            epochs = pass_epochs = ACCURACY_EPOCHS
    warmup = 0 if args.quick else 1
    memory_limit = 2 * n_rows * n_features * 4 + MEMORY_SLACK_BYTES

    with tempfile.TemporaryDirectory(prefix="dltrain-bench-") as tmp:
        run_dir = Path(tmp) / "run"
        fit_argv = adapter.fit_command(E2E_CONFIG.as_posix(), run_dir, pass_epochs)
        ours = timed_child_runs(sec, "dltrain fit", fit_argv, args.e2e_runs, warmup)
        ref = None
        if args.reasons.get("torch") or args.reasons.get("pandas"):
            reason = args.reasons.get("torch") or args.reasons.get("pandas")
            report.notes.append(f"end-to-end reference skipped: {reason}")
        else:
            ref_argv = [sys.executable, str(BENCH_DIR / "torch_reference.py"), "--epochs", str(epochs), "--quiet"]
            ref = timed_child_runs(sec, "pandas+PyTorch script", ref_argv, args.e2e_runs, warmup)
            if "error" in ref:
                report.notes.append(f"end-to-end reference: {ref['error']}")
                ref = None

        if "error" in ours:
            report.add(sec, f"skipped: {ours['error']}")
            return
        label = f"{epochs} epoch(s), batch 32"
        wall_ratio = ours["wall"] / ref["wall"] if ref else None
        report.add(
            sec,
            f"end-to-end wall time, {label}, vs pandas+PyTorch script",
            fmt_s(ours["wall"]),
            fmt_s(ref["wall"]) if ref else "—",
            fmt_ratio(wall_ratio),
            f"≤ {E2E_RATIO_TARGET}×",
            None if wall_ratio is None else wall_ratio <= E2E_RATIO_TARGET,
        )
        mem_ratio = ours["maxrss"] / ref["maxrss"] if ref else None
        report.add(
            sec,
            f"end-to-end peak RSS, {label}, vs pandas+PyTorch script",
            f"{ours['maxrss'] / MB:.0f} MB",
            f"{ref['maxrss'] / MB:.0f} MB" if ref else "—",
            fmt_ratio(mem_ratio),
            f"dltrain ≤ {memory_limit / MB:.0f} MB (2× float32 train matrix + 150 MB)",
            ours["maxrss"] <= memory_limit,
        )

        if epochs == ACCURACY_EPOCHS:
            r = run_child(adapter.eval_command(run_dir, TEST_CSV.relative_to(REPO_ROOT).as_posix()), REPO_ROOT)
            acc = None
            if r["rc"] == 0:
                try:
                    acc = find_accuracy(json.loads(r["stdout"]))
                except json.JSONDecodeError:
                    acc = None
            if acc is None:
                tail = (r["stderr"].strip().splitlines() or r["stdout"].strip().splitlines() or ["no output"])[-1]
                report.add(sec, f"test accuracy after {epochs} epoch(s): dltrain eval failed (exit {r['rc']}): {tail}")
            else:
                report.add(
                    sec,
                    f"test accuracy (test.csv) after {epochs} epoch(s)",
                    f"{acc:.4f}",
                    "",
                    "",
                    f"≥ {ACCURACY_TARGET}",
                    acc >= ACCURACY_TARGET,
                )
        else:
            report.notes.append(
                f"Test accuracy is only reported when the end-to-end run trains {ACCURACY_EPOCHS} epochs "
                f"(this run: {epochs})."
            )
    report.notes.append(
        "End-to-end: each side is a separate process (wall time includes start-up and CSV reading); "
        f"median of {args.e2e_runs} run(s){'' if warmup == 0 else ' after 1 warm-up'}; peak RSS is "
        "the child's maximum resident set size as /usr/bin/time reports it (max over the runs); MB = 10^6 bytes."
    )


def section_csv(report: Report, args, pandas) -> None:
    sec = "4 csv"
    rel = TRAIN_CSV.relative_to(REPO_ROOT).as_posix()
    warmup = 0 if args.quick else 1
    try:
        ours, _ = median_time(lambda: adapter.load_csv(TRAIN_CSV), args.runs, warmup=warmup)
    except Exception as exc:
        report.add(sec, f"skipped: dltrain loader failed: {type(exc).__name__}: {exc}")
        return
    log("csv", f"dltrain loader: {fmt_s(ours)}")
    if pandas is None:
        report.add(sec, f"load {rel}", fmt_s(ours))
        report.notes.append(f"pandas comparison skipped: {args.reasons['pandas']}")
        return

    def pandas_load():
        df = pandas.read_csv(TRAIN_CSV)
        X = df.drop(columns=["label"]).to_numpy(dtype=np.float32)
        y = df["label"].to_numpy(dtype=np.int64)
        return X, y

    ref, _ = median_time(pandas_load, args.runs, warmup=warmup)
    log("csv", f"pandas.read_csv: {fmt_s(ref)}")
    report.add(
        sec,
        f"load {rel} to float32 X / int64 y vs pandas.read_csv (+ to_numpy)",
        fmt_s(ours),
        fmt_s(ref),
        fmt_ratio(ours / ref),
    )


def section_threads(report: Report, X, y, args, threadpoolctl) -> None:
    sec = "5 threads"
    if threadpoolctl is None:
        report.skip(sec, args.reasons["threadpoolctl"])
        return
    all_threads = (
        max((lib.get("num_threads") or 0) for lib in threadpoolctl.threadpool_info() if lib.get("user_api") == "blas")
        or os.cpu_count()
    )

    for batch in (32, 256):
        # In turn (1, all, auto, 1, all, auto, ...): timed one after the other, the same setting
        # measured up to 25% apart on this shared machine, more than the effect being shown.
        trainers = (
            {
                threads: adapter.make_engine_trainer(list(SEED_MODEL), batch, LR, args.seed, blas_threads=threads)
                for threads in (1, all_threads, None)
            }
            if all_threads != 1
            else None
        )
        if trainers is None:
            report.skip(sec, "the BLAS has one thread only")
            return
        medians, _ = time_trainers_side_by_side(trainers, batch, X, y, args.max_batches, args.runs)
        one, many, auto = medians[1], medians[all_threads], medians[None]
        chosen = adapter.engine_thread_choice(list(SEED_MODEL), batch)
        log(
            "threads",
            f"batch {batch}: 1 BLAS thread {fmt_s(one)}, {all_threads} threads {fmt_s(many)}, "
            f"engine's choice ({chosen}) {fmt_s(auto)}",
        )
        report.add(
            sec,
            f"epoch time, {model_name(SEED_MODEL)}, batch {batch}: {all_threads} BLAS threads vs 1",
            fmt_s(many),
            fmt_s(one),
            fmt_ratio(many / one),
        )
        report.add(
            sec,
            f"epoch time, {model_name(SEED_MODEL)}, batch {batch}: engine's choice ({chosen} thread(s)) "
            f"vs the faster of 1 and {all_threads}",
            fmt_s(auto),
            fmt_s(min(one, many)),
            fmt_ratio(auto / min(one, many)),
        )


BUSY_LOOP = "import time\nwhile True:\n    pass\n"


def section_busy(report: Report, X, y, args, torch_ref) -> None:
    """Section 6: with one more CPU-bound process running, the engine as `dltrain fit` runs it
    (its own thread choice, fused kernels) against the same with serial kernels (one kernel
    thread), and PyTorch in the same run for reference."""
    sec = "6 busy"
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        time.sleep(1.0)  # let the machine-load measurement see it
        for sizes, batch in ((SEED_MODEL, 256), (WIDE_MODEL, 256)):
            trainers = {
                "auto": adapter.make_engine_trainer(list(sizes), batch, LR, args.seed),
                "serial": adapter.make_engine_trainer(list(sizes), batch, LR, args.seed, kernel_threads=1),
            }
            if torch_ref is not None:
                trainers["PyTorch"] = torch_ref.TorchTrainer(list(sizes), batch, LR, args.seed)
            medians, _ = time_trainers_side_by_side(trainers, batch, X, y, args.max_batches, args.runs)
            auto, serial = medians["auto"], medians["serial"]
            chosen = trainers["auto"].trainer.blas_threads
            log(
                "busy",
                f"{model_name(sizes)} batch {batch}: engine's choice ({chosen} thread(s)) {fmt_s(auto)}, "
                f"serial kernels {fmt_s(serial)}"
                + (f", PyTorch {fmt_s(medians['PyTorch'])}" if "PyTorch" in medians else ""),
            )
            report.add(
                sec,
                f"epoch time with another CPU-bound process, {model_name(sizes)}, batch {batch}: "
                f"engine's choice ({chosen} thread(s), last epoch) vs serial kernels",
                fmt_s(auto),
                fmt_s(serial),
                fmt_ratio(auto / serial),
                f"≤ {BUSY_RATIO_TARGET}×",
                auto / serial <= BUSY_RATIO_TARGET,
            )
            if "PyTorch" in medians:
                report.add(
                    sec,
                    f"epoch time with another CPU-bound process, {model_name(sizes)}, batch {batch}: engine vs PyTorch",
                    fmt_s(auto),
                    fmt_s(medians["PyTorch"]),
                    fmt_ratio(auto / medians["PyTorch"]),
                )
    finally:
        busy.kill()
        busy.wait()


def section_paths(report: Report, X, y, args) -> None:
    """Section 7: the same engine on its fused path and on its reference NumPy path, in turn."""
    sec = "7 paths"
    if not adapter.engine_path().startswith("fused"):
        report.skip(sec, adapter.engine_path())
        return
    for sizes, batch in ENGINE_CASES:
        trainers = {
            fused: adapter.make_engine_trainer(list(sizes), batch, LR, args.seed, fused=fused)
            for fused in (True, False)
        }
        medians, _ = time_trainers_side_by_side(trainers, batch, X, y, args.max_batches, args.runs)
        log(
            "paths",
            f"{model_name(sizes)} batch {batch}: fused {fmt_s(medians[True])}, reference {fmt_s(medians[False])}",
        )
        report.add(
            sec,
            f"epoch time, {model_name(sizes)}, batch {batch}: fused kernels vs reference NumPy path",
            fmt_s(medians[True]),
            fmt_s(medians[False]),
            fmt_ratio(medians[True] / medians[False]),
            "< 1×",
            medians[True] < medians[False],
        )


def section_step(report: Report, X, y, args) -> None:
    """Section 8: the parts of one training step at batch 256, each against the products-only
    floor timed in the same run (the engine's step, instrumented by the adapter)."""
    sec = "8 step"
    batches = args.max_batches or n_batches(X.shape[0], 256)
    for sizes in (SEED_MODEL, WIDE_MODEL):
        trainer = adapter.make_engine_trainer(list(sizes), 256, LR, args.seed)
        floor = ProductsOnly(list(sizes), 256)
        floor.train_epoch(X, y, batches)  # warm-up
        runs, floors = [], []
        for _ in range(args.runs):
            gc.collect()
            runs.append(adapter.step_breakdown(trainer, X, y, batches))
            t0 = time.perf_counter()
            floor.train_epoch(X, y, batches)
            floors.append((time.perf_counter() - t0) / batches)
        parts = {
            part: statistics.median(run[part] for run in runs) for part in ("step", *STEP_PARTS) if part != "other"
        }
        parts["other"] = parts["step"] - sum(value for part, value in parts.items() if part != "step")
        floor_step = statistics.median(floors)
        log(
            "step",
            f"{model_name(sizes)}: " + ", ".join(f"{part} {value * 1e6:.0f} µs" for part, value in parts.items()),
        )
        rows = [("step", "whole step")] + list(STEP_PARTS.items())
        for part, label in rows:
            report.add(
                sec,
                f"{model_name(sizes)}, batch 256, per step: {label} vs the products-only floor",
                f"{parts[part] * 1e6:.0f} µs",
                f"{floor_step * 1e6:.0f} µs",
                fmt_ratio(parts[part] / floor_step),
            )


# --------------------------------------------------------------------------- main
def csv_dims(path: Path) -> tuple[int, int]:
    with path.open("rb") as fh:
        header = fh.readline()
        rows = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 24), b""))
    return rows, len(header.split(b",")) - 1


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=None, help="timed runs per measurement (default 5; 3 with --quick)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20 batches per epoch, 3 runs, 1 end-to-end epoch, no docs written by default",
    )
    p.add_argument(
        "--max-batches",
        type=int,
        default=None,
        help="time only this many batches per epoch and scale to a full epoch (default: full epochs)",
    )
    p.add_argument(
        "--e2e-epochs",
        type=int,
        default=None,
        help="epochs for the end-to-end comparison (passed to dltrain as --set train.epochs=N)",
    )
    p.add_argument("--e2e-runs", type=int, default=None, help="timed end-to-end runs per side (default: --runs)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of: {', '.join(SECTIONS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"markdown report to write (default {DEFAULT_OUTPUT}, none with --quick)",
    )
    p.add_argument("--no-write", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 3 if args.quick else 5
    if args.quick and args.max_batches is None:
        args.max_batches = 20
    if args.quick and args.e2e_epochs is None:
        args.e2e_epochs = 1
    if args.e2e_runs is None:
        args.e2e_runs = 1 if args.quick else args.runs
    if args.runs < 1 or args.e2e_runs < 1 or (args.max_batches is not None and args.max_batches < 1):
        p.error("--runs, --e2e-runs and --max-batches must be at least 1")
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown section(s): {', '.join(unknown)}")
    if args.output is None and not args.quick:
        args.output = DEFAULT_OUTPUT
    if args.no_write:
        args.output = None
    return args


def main(argv: list[str] | None = None) -> int:
    raw_argv = sys.argv[1:] if argv is None else argv
    args = parse_args(raw_argv)
    command = "python bench/run.py" + (" " + shlex.join(raw_argv) if raw_argv else "")

    if not TRAIN_CSV.is_file():
        print(
            f"{TRAIN_CSV.relative_to(REPO_ROOT)} not found: run `python bench/prepare_fashion_mnist.py` first.",
            file=sys.stderr,
        )
        return 2

    threadpoolctl, r_tp = optional_import("threadpoolctl")
    pandas, r_pd = optional_import("pandas")
    # The kernels' pool starts now, with dltrain's settings; then PyTorch loads with its own.
    threading_layer = adapter.start_engine_threads()
    for name in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME"):
        if name in DLTRAIN_THREAD_SETTINGS:
            del os.environ[name]
    torch, r_torch = optional_import("torch")
    torch_ref = None
    if torch is not None:
        torch_ref, r_torch = optional_import("torch_reference", "bench/torch_reference.py")
    sklearn_nn, r_sk = optional_import("sklearn.neural_network", "scikit-learn")
    args.reasons = {"threadpoolctl": r_tp, "pandas": r_pd, "torch": r_torch, "sklearn": r_sk}
    for reason in args.reasons.values():
        if reason:
            print(f"note: {reason}; the parts that need it are skipped", flush=True)

    if args.runs < 5 and not args.quick:
        print("note: fewer than 5 runs per measurement; the targets assume a median of at least 5", flush=True)

    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = 0.0
    if load1 > 0.5:
        print(f"warning: the machine is busy (1-minute load average {load1:.2f}); timings will be noisy", flush=True)

    report = Report()
    report.notes.append(f"dltrain engine used: {adapter.ENGINE_LABEL}; path: {adapter.engine_path()}.")
    report.notes.append(
        "dltrain set these before NumPy loaded: "
        + (", ".join(f"{name}={value}" for name, value in sorted(DLTRAIN_THREAD_SETTINGS.items())) or "nothing")
        + (f"; numba threading layer: {threading_layer}" if threading_layer else "")
        + ". OMP_WAIT_POLICY and KMP_BLOCKTIME were removed again before PyTorch loaded (its defaults)."
    )
    counters_start = cpu_counters()
    started = _dt.datetime.now().astimezone()
    n_rows, n_features = csv_dims(TRAIN_CSV)

    needs_data = any(s in args.sections for s in ("engine", "flops", "threads", "busy", "paths", "step"))
    X = y = None
    if needs_data:
        t0 = time.perf_counter()
        X, y = load_training_data()
        log("data", f"{X.shape[0]} x {X.shape[1]} float32 training rows loaded in {time.perf_counter() - t0:.1f} s")

    peaks = None
    if "flops" in args.sections:
        # Measured before and after the engine timings, and the higher median kept: on a shared
        # (virtual) machine a single measurement can land in a slow phase.
        peaks = [measure_peak()]
        log("flops", f"float32 matmul peak (before): {peaks[0][0]:.1f} GFLOP/s")

    def guarded(section: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:
            traceback.print_exc()
            report.add(section, f"failed: {type(exc).__name__}: {exc}")

    if "engine" in args.sections or "flops" in args.sections:
        guarded("1 engine", lambda: section_engine(report, X, y, args, torch_ref, sklearn_nn, peaks))
    if "e2e" in args.sections:
        guarded("3 e2e", lambda: section_e2e(report, args, n_rows, n_features))
    if "csv" in args.sections:
        guarded("4 csv", lambda: section_csv(report, args, pandas))
    if "threads" in args.sections:
        guarded("5 threads", lambda: section_threads(report, X, y, args, threadpoolctl))
    if "busy" in args.sections:
        guarded("6 busy", lambda: section_busy(report, X, y, args, torch_ref))
    if "paths" in args.sections:
        guarded("7 paths", lambda: section_paths(report, X, y, args))
    if "step" in args.sections:
        guarded("8 step", lambda: section_step(report, X, y, args))

    load = other_load(counters_start, cpu_counters())
    args.other_load = load
    if load is not None:
        others, steal = load
        msg = (
            f"Other processes used {others:.0%} of the machine's CPU capacity during the run "
            f"(hypervisor steal {steal:.0%})."
        )
        if others > 0.05 or steal > 0.05:
            msg += (
                " That is enough to distort the timings (small BLAS calls on all threads suffer most): "
                "rerun on an idle machine."
            )
        report.notes.append(msg)
    if torch is not None:
        report.notes.append(
            f"PyTorch runs with {torch.get_num_threads()} intra-op thread(s) (its default); its BLAS is the "
            "MKL built into the wheel, which threadpoolctl does not list."
        )
    report.notes.append(
        "Ratios are dltrain / reference: below 1 means dltrain is faster or smaller "
        "(for section 5, below 1 means the extra BLAS threads help)."
    )

    table = report.table()
    print()
    print(table)
    print()
    for note in report.notes:
        print(f"- {note}")

    if args.output is not None:
        text = render_markdown(report, table, args, command, started, threadpoolctl, torch, pandas)
        out = args.output if args.output.is_absolute() else REPO_ROOT / args.output
        text += kept_sections(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
        print(f"\nwrote {args.output}")
    return 0


def kept_sections(path: Path) -> str:
    """The part of the document other scripts write (bench/startup.py's start-up figures), from
    KEPT_MARKER on: kept as it is when this run rewrites the rest."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    index = text.find(KEPT_MARKER)
    return "" if index < 0 else "\n" + text[index:]


def render_markdown(report, table, args, command, started, threadpoolctl, torch, pandas) -> str:
    def version(mod, name):
        return getattr(mod, "__version__", "?") if mod is not None else f"not installed ({name})"

    sklearn, _ = optional_import("sklearn")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env_lines = []
    for var in (
        "OPENBLAS_CORETYPE",
        "OPENBLAS_L2_SIZE",
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        *sorted(DLTRAIN_THREAD_SETTINGS),
    ):
        value = os.environ.get(var)
        env_lines.append(f"  - `{var}`: {'not set' if value is None else f'`{value}`'}")
    torch_line = version(torch, "torch")
    if torch is not None:
        torch_line += f" ({torch.get_num_threads()} intra-op threads)"
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/run.py`; do not edit by hand. To reproduce: install the `bench` extra "
        "(`pip install -e '.[bench]'`), run `python bench/prepare_fashion_mnist.py`, then the command below.",
        "",
        "Accuracy on real public tables (cars, seattle-weather, wine, breast cancer, diabetes, digits) beside "
        "scikit-learn on the same splits: [real_data.md](real_data.md), generated by `bench/real_data.py`.",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Command: `{command}`",
        f"- Mode: {'quick smoke run (not representative)' if args.quick else 'full'}; "
        f"{args.runs} timed run(s) per measurement after a warm-up; "
        + ("full epochs" if args.max_batches is None else f"{args.max_batches} batches per epoch, scaled"),
        "",
        "## Machine",
        "",
        f"- CPU: {cpu_model()}",
        f"- Cores: {os.cpu_count()} logical CPU(s), {affinity} usable by this process; memory {mem_total()}",
        f"- OS: {platform.system()} {platform.release()} ({platform.machine()})",
        "",
        "## Software",
        "",
        f"- Python {platform.python_version()}, NumPy {np.__version__} (built with {numpy_blas_build()}), "
        f"PyTorch {torch_line}, scikit-learn {version(sklearn, 'scikit-learn')}, "
        f"pandas {version(pandas, 'pandas')}, threadpoolctl {version(threadpoolctl, 'threadpoolctl')}",
        "- Thread pools loaded (threadpoolctl.threadpool_info()):",
        *[f"  - {line}" for line in blas_description(threadpoolctl)],
        "- Environment:",
        *env_lines,
        "",
        "## Results",
        "",
        table,
        "",
        *[f"- {note}" for note in report.notes],
        "",
        "## What is measured",
        "",
        f"1. **engine**: seconds per training epoch on the {TRAIN_CSV.name} rows (pixels scaled to 0..1, float32), "
        "seed model 784→128 ReLU→10 softmax with Adam (lr 0.001), and a wider 784→512→512→10. "
        "Every framework reshuffles each epoch and walks consecutive batches. PyTorch: `torch.nn.Sequential`, "
        "`torch.optim.Adam`, `CrossEntropyLoss`, float32 (the loop in `bench/torch_reference.py`). "
        "scikit-learn: `MLPClassifier(solver='adam', alpha=0)`, one `partial_fit` call per epoch, float32 input. "
        "Median of the timed runs after one warm-up epoch. The *floor* rows (batch 256) time only the "
        "matrix products of each step (NumPy, the engine's BLAS threads, no gather, activations, loss or "
        "optimizer), in turn with the other two: no engine that leaves its products to NumPy can beat "
        "that ratio on this machine.",
        f"2. **flops**: training FLOPs per sample are counted as 2·m·n·k per matrix product, three products per "
        "layer (forward, gradient w.r.t. the weights, gradient w.r.t. the input) except two for the first "
        f"layer; the peak is the median of {PEAK_MATMUL_REPEATS} NumPy float32 products "
        f"{PEAK_MATMUL_N}×{PEAK_MATMUL_N} @ {PEAK_MATMUL_N}×{PEAK_MATMUL_N} on all threads, measured before "
        "and after the engine timings (the higher median is used).",
        f"3. **e2e**: `dltrain fit {E2E_CONFIG.as_posix()} --quiet --out <tmpdir> --force` against "
        "`python bench/torch_reference.py --epochs N` (pandas.read_csv + the same PyTorch training, batch 32), "
        "each as a subprocess; peak RSS from `/usr/bin/time` (maximum resident set size). Test accuracy: "
        f"`dltrain eval <run> {TEST_CSV.relative_to(REPO_ROOT).as_posix()} --json`, key `accuracy`, "
        f"only after {ACCURACY_EPOCHS} epochs.",
        "4. **csv**: the engine's CSV loader against `pandas.read_csv` + `to_numpy(float32)` on the train CSV "
        "(file already in the page cache).",
        "5. **threads**: the seed model at batch 32 and 256 with the BLAS limited to 1 thread "
        "(`threadpoolctl.threadpool_limits(1, user_api='blas')`), with all threads, and with the engine's own "
        "choice, the three timed in turn (the engine's choice leaves the cores other processes use alone).",
        "6. **busy**: one extra process spinning (`while True: pass`) for the whole section; the engine as "
        "`dltrain fit` runs it (its own thread choice, re-made each epoch from the cores others keep busy, "
        "fused kernels) against the same engine with the kernels on one thread, and PyTorch, timed in turn.",
        "7. **paths**: the engine with its fused kernels against the same engine on its reference NumPy path "
        "(`fused=False`: textbook NumPy for bias, activations, loss and Adam; the same BLAS products), in turn.",
        "8. **step**: one epoch's first batches of the engine's own training loop with each part timed where "
        "it is called (`step_breakdown` in `bench/dltrain_adapter.py` wraps the batch iterator, the layers' "
        "matrix products, forward and backward, the loss, the recorded predictions and the optimizer); medians "
        "per step over the runs, each part against the products-only floor timed in turn with it. *The loop's "
        "own Python* is the whole step less the parts.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
