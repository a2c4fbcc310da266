"""Start-up time of `cachewarm --version`, `cachewarm run --help` and shell completion, as
ratios to a bare `python -c pass` of the same interpreter.

Runs inside bench/run.py's installs of the working tree (built or reused under
bench/work/; see installs.py). The commands are interleaved, one round at a time, so a
change in the machine's load falls on all of them alike; the median of `--repeat`
rounds is reported, with the load average before and after:

    .venv/bin/python bench/startup.py --installs default,fast --repeat 30

The goal is 6x `python -c pass` or less for `--version` and `run --help`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from installs import SPECS, ensure_install, snapshot_source  # noqa: E402
from proc import CHILD_ENV, load_average, log  # noqa: E402

GOAL = 6.0
COMPLETION = {
    "_CACHEWARM_COMPLETE": "bash_complete",
    "COMP_WORDS": "cachewarm ru",
    "COMP_CWORD": "1",
}


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--installs", default="default,fast", help="comma-separated installs")
    parser.add_argument("--repeat", type=int, default=30, help="rounds (median reported)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the installs")
    args = parser.parse_args()
    names = [n.strip() for n in args.installs.split(",") if n.strip()]
    if unknown := [n for n in names if n not in SPECS]:
        parser.error(f"unknown install {', '.join(unknown)}; choose from {', '.join(SPECS)}")
    with tempfile.TemporaryDirectory(prefix="cwbench-src-") as tmp:
        src = snapshot_source(Path(tmp) / "cachewarm-src")
        installs = [ensure_install(name, src, rebuild=args.rebuild) for name in names]
    load_before = load_average()
    rows = []
    for install in installs:
        commands = {
            "python -c pass": ([install.python, "-c", "pass"], CHILD_ENV),
            "cachewarm --version": ([install.cachewarm, "--version"], CHILD_ENV),
            "cachewarm run --help": ([install.cachewarm, "run", "--help"], CHILD_ENV),
            "completion of `cachewarm ru`": ([install.cachewarm], CHILD_ENV | COMPLETION),
        }
        for argv, env in commands.values():  # once untimed: page cache, .pyc files
            timed(argv, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeat):
            for name, (argv, env) in commands.items():
                times[name].append(timed(argv, env))
        base = statistics.median(times["python -c pass"])
        for name, samples in times.items():
            median = statistics.median(samples)
            ratio = median / base
            goal = "" if name.startswith(("python", "completion")) else f"<= {GOAL:.0f}x"
            met = "" if not goal else ("met" if ratio <= GOAL else "**not met**")
            rows.append(
                f"| {install.name} | {name} | {median * 1000:.0f} | {ratio:.2f}x | {goal} | {met} |"
            )
        log(f"{install.name}: done")
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    print(f"Start-up, median of {args.repeat} interleaved rounds; {os.cpu_count()} cores")
    print(f"Load average before: {load_before}; after: {load_average()}; uptime: {uptime.strip()}")
    print()
    print("| install | command | median ms | ratio to python -c pass | goal | |")
    print("|---|---|---:|---:|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
