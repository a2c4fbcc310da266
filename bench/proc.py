"""Child processes for the benchmark: timed, with their peak RSS, in a clean environment.

Every variant is timed as a whole process, interpreter start-up included, because that is
what cron pays; GNU time reports the peak RSS (see run_child for why not os.wait4).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work"  # gitignored: the installs under test
TIME = "/usr/bin/time"  # GNU time, for peak RSS
# No PYTHONPATH/PYTHONHOME: an install must import its own packages, not the dev tree's.
CHILD_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def human(n: int) -> str:
    """10000 -> 10k, 1000000 -> 1M: sizes as the tables and file names show them."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


@dataclass
class Sample:
    wall_s: float
    maxrss_kb: int
    started_at: float  # time.time() just before the spawn, to align log timestamps
    stdout: str
    stderr: str


def run_child(
    argv: Sequence[str], *, stdin: bytes | None = None, cwd: Path = ROOT, ok: Sequence[int] = (0,)
) -> Sample:
    """Run one process under GNU time for its peak RSS (for a shell pipeline, the largest of
    its stages); an exit code not in `ok` raises with the tail of its stderr.

    Not os.wait4 on a direct child: a child forked from this process inherits this
    process's RSS as its ru_maxrss floor; GNU time is small and forks the real child.
    """
    with (
        tempfile.TemporaryFile() as inp,
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as rss,
    ):
        if stdin is not None:
            inp.write(stdin)
            inp.seek(0)
        timed = [TIME, "-f", "%M", "-o", rss.name, *argv]
        started_at = time.time()
        t0 = time.perf_counter()
        proc = subprocess.run(
            timed, stdin=inp, stdout=out, stderr=err, cwd=cwd, env=CHILD_ENV, check=False
        )
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        lines = rss.read().split()
        sample = Sample(
            wall,
            int(lines[-1]) if lines and lines[-1].isdigit() else 0,
            started_at,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
        )
    if proc.returncode not in ok:
        raise RuntimeError(f"{shlex.join(argv)} exited {proc.returncode}:\n{sample.stderr[-3000:]}")
    return sample


def busy_cores(seconds: float) -> float:
    """Average number of busy CPUs machine-wide over `seconds` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    busy0, total0 = sample()
    time.sleep(seconds)  # the measurement window itself
    busy1, total1 = sample()
    cores = os.cpu_count() or 1
    return cores * (busy1 - busy0) / max(1, total1 - total0)


def load_average() -> str:
    """The 1/5/15-minute load averages, for the results' note on machine quietness."""
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
