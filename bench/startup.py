"""How long the command line takes to answer before any work: `dltrain --help`, `dltrain fit --help`
and `dltrain --version`, each a fresh process, against a bare `python -c pass` and, given
``--before SRC``, the same commands of another checkout's ``src/`` folder (the code before a change),
the two run in turn (A B A B ...) so that a drifting machine moves both alike.

    python bench/startup.py [--runs 10] [--before ../old-checkout/src] [--write]

Wall seconds from a monotonic clock around each process; CPU seconds (user + system) from the
operating system's accounting of the finished child (``os.wait4``). Medians over the runs, after
one warm-up run of each (which also compiles the bytecode). ``--write`` puts the table into
docs/benchmarks.md, below the part bench/run.py generates (which keeps it)."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "benchmarks.md"
# bench/run.py keeps everything from this line on when it rewrites the document.
KEPT_MARKER = "<!-- kept by bench/run.py: the sections below are written by other scripts -->"
SECTION_TITLE = "## Start-up of the command line (bench/startup.py)"
COMMANDS = [["--help"], ["fit", "--help"], ["--version"]]


def timed_run(argv: list[str], env: dict) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, exit status) of one process."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, process.returncode


def environment(src: Path | None) -> dict:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def measure(runs: int, before: Path | None) -> list[dict]:
    """One row per command: medians of this checkout's runs (and of ``before``'s, in turn)."""
    sides = {"now": environment(ROOT / "src")}
    if before is not None:
        sides["before"] = environment(before)
    rows = []
    floor = [[sys.executable, "-c", "pass"], environment(None)]
    cases = [("python -c pass", {"now": floor})] + [
        (
            f"dltrain {' '.join(args)}",
            {side: [[sys.executable, "-m", "dltrain", *args], env] for side, env in sides.items()},
        )
        for args in COMMANDS
    ]
    for name, commands in cases:
        figures: dict[str, list] = {side: [] for side in commands}
        for side, (argv, env) in commands.items():  # warm-up: bytecode compiled, files in the page cache
            if timed_run(argv, env)[2] != 0:
                raise SystemExit(f"{name} ({side}) failed: {shlex.join(argv)}")
        for _ in range(runs):
            for side, (argv, env) in commands.items():
                figures[side].append(timed_run(argv, env)[:2])
        row = {"command": name}
        for side, pairs in figures.items():
            row[f"{side}_wall"] = statistics.median(wall for wall, _ in pairs)
            row[f"{side}_cpu"] = statistics.median(cpu for _, cpu in pairs)
        rows.append(row)
        print(row, flush=True)
    return rows


def load_average() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} logical CPUs"


def markdown(rows: list[dict], runs: int, before: Path | None, command: str, before_label: str) -> str:
    with_before = before is not None
    header = "| command | wall, median | CPU, median |"
    rule = "|---|---:|---:|"
    if with_before:
        header += " wall before | CPU before | wall now / before |"
        rule += "---:|---:|---:|"
    lines = [header, rule]
    for row in rows:
        line = f"| `{row['command']}` | {row['now_wall']:.3f} s | {row['now_cpu']:.3f} s |"
        if with_before:
            if "before_wall" in row:
                ratio = row["now_wall"] / row["before_wall"]
                line += f" {row['before_wall']:.3f} s | {row['before_cpu']:.3f} s | {ratio:.2f}× |"
            else:
                line += " | | |"
        lines.append(line)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    notes = [
        f"- Date: {stamp}; Python {platform.python_version()}; load average at the end: {load_average()}",
        f"- Command: `{command}`",
        f"- Each command a fresh process, {runs} runs after one warm-up"
        + (f"; *before*: {before_label}, run in turn with this checkout" if with_before else "")
        + "; wall from a monotonic clock around the process, CPU = user + system of the child.",
        "- Target: `dltrain --help` in at most 0.3 s wall on the idle 2-core machine (issue 20). On a busy"
        " machine wall reads high against CPU (see the load average). What keeps it there without timing:"
        " tests/test_cli_start.py checks that help and --version load no NumPy, pydantic, YAML, numba or"
        " command module.",
    ]
    return "\n".join([SECTION_TITLE, "", *lines, "", *notes, ""])


def write_section(text: str) -> None:
    """Replace this script's section of docs/benchmarks.md (below the kept marker), or add it."""
    document = DOCUMENT.read_text(encoding="utf-8") if DOCUMENT.exists() else ""
    head, marker, kept = document.partition(KEPT_MARKER)
    if not marker:
        head = document.rstrip("\n") + "\n\n"
    others = [part for part in re.split(r"(?m)^(?=## )", kept) if part.strip() and not part.startswith(SECTION_TITLE)]
    document = head + KEPT_MARKER + "\n\n" + "".join(part.strip("\n") + "\n\n" for part in others) + text
    temporary = DOCUMENT.with_name(f".{DOCUMENT.name}.tmp")
    temporary.write_text(document, encoding="utf-8")
    os.replace(temporary, DOCUMENT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs of each command (default 10)")
    parser.add_argument("--before", type=Path, help="another checkout's src/ folder, timed in turn with this one")
    parser.add_argument(
        "--before-label", default="the checkout given", help="what --before is, for the document (e.g. main at abc1234)"
    )
    parser.add_argument("--write", action="store_true", help="put the table into docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.before is not None and not (args.before / "dltrain" / "__init__.py").is_file():
        parser.error(f"--before {args.before}: no dltrain package there; give a checkout's src/ folder")
    # The document names the other checkout by its label: a path of this machine means nothing elsewhere.
    words = ["python", "bench/startup.py", "--runs", str(args.runs)]
    if args.before is not None:
        words += ["--before", "OTHER_CHECKOUT/src"]
    rows = measure(args.runs, args.before)
    text = markdown(rows, args.runs, args.before, shlex.join(words), args.before_label)
    print()
    print(text)
    if args.write:
        write_section(text)
        print(f"wrote {DOCUMENT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
