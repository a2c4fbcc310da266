"""The benchmark still runs: bench/run.py at a tiny size, every catalog, default install.

A config or CLI change that breaks the benchmark fails here rather than on the next
measurement. Asserts that the run completed, that every variant ran, and that every
variant wrote the same listings byte for byte; never timings (those go to bench/results/).
The default install is built once under bench/work/ (gitignored) and reused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
N = 2000
VARIANTS = {"hot", "c", "naive", "full:default", "steady:default", "invalidate"}
CHECKS = {
    "hot-count",
    "keysets",
    "c-identical",  # the C pipeline's listings are byte-identical to cachewarm's
    "naive-identical",
    "steady-incremental:default",
    "steady-equals-fresh:default",
    "steady-changed-only-updated:default",
}


@pytest.mark.timeout(240)  # three catalogs, plus building the install on a fresh clone
@pytest.mark.slow
def test_bench_runs_and_every_variant_writes_the_same_bytes(tmp_path: Path) -> None:
    bench = [
        str(ROOT / "bench" / "run.py"),
        "--catalog",
        "sample,wide,narrow",
        "--installs",
        "default",
    ]
    argv = [sys.executable, *bench, "--sizes", str(N), "--repeat", "1", "--out", str(tmp_path)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=230)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [results] = tmp_path.glob("*.json")
    reports = json.loads(results.read_text(encoding="utf-8"))["reports"]
    assert [(r["catalog"], r["n"], r["hot"]) for r in reports] == [
        ("sample", N, N),
        ("wide", N, N),
        ("narrow", N, N),
    ]
    for report in reports:
        ran = {r["key"] for r in report["results"] if r["wall_s"]}
        assert ran == VARIANTS, report["catalog"]
        checks = {c["name"]: c for c in report["checks"]}
        assert set(checks) == CHECKS, report["catalog"]
        failed = [f"{c['text']} {c['details']}" for c in checks.values() if not c["ok"]]
        assert not failed, report["catalog"]


@pytest.mark.timeout(120)
def test_overlap_bench_runs_each_way_of_warming() -> None:
    """bench/overlap.py (and the forked-workers experiment it times) still runs to the end.

    Each timed variant fails the script when a warm exits non-zero; the forked warm
    also when it wrote fewer listings than hot ids.
    """
    argv = [
        sys.executable,
        str(ROOT / "bench" / "overlap.py"),
        *("--catalog", "narrow", "--size", str(N), "--repeat", "1", "--installs", "default"),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| narrow | default |")]
    assert [row.split(" | ")[2] for row in rows] == [
        "one process",
        "two halves at once",
        "forked after the hot query, 2 workers",
    ]
