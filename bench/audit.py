"""Benchmark `cachewarm audit`: how long it takes, and what it holds, at N cached listings.

Starts its own throwaway MariaDB and Redis (scripts/servers.py, free ports), seeds the
sample catalog (bench/catalog.py) with every product hot, warms once, then times the
audit as cron runs it, a whole process each time (GNU time for the peak RSS):

1. `audit` (the default sample of 1000) and `audit --all` on a fresh warm: nothing stale;
2. the catalog's 1% update, not invalidated, then `audit --all`: 1% stale, so this one
   also pays the re-check pause ([audit] recheck_after, the default 2 s) and re-reads them;
3. `audit --all --fix` once, then `audit --all` must find nothing stale.

Each phase's counts are checked (checked = N, stale = 0 or exactly the updated ids);
a failed check exits 1 after writing the results.

    .venv/bin/python bench/audit.py --size 100000 --repeat 3

Results go to bench/results/<date>-audit-<size>.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "examples"), str(ROOT / "scripts")]

import seed as shop  # noqa: E402  (examples/seed.py)
import servers  # noqa: E402  (scripts/servers.py)
from catalog import SAMPLE, Catalog  # noqa: E402
from proc import Sample, busy_cores, human, load_average, log, run_child  # noqa: E402

from cachewarm.mysql.source import driver_name  # noqa: E402

PREFIX = "benchaudit"
RECHECK_AFTER_S = 2.0  # [audit] recheck_after's default, written out so the table can say it


def write_config(path: Path, mysql_url: str, redis_url: str, catalog: Catalog, n: int) -> Path:
    sections: dict[str, dict[str, object]] = {
        "mysql": {"url": mysql_url},
        "redis": {"url": redis_url},
        "warm": {
            "hot_query": catalog.hot_query,
            "listing_query": catalog.listing_query,
            "limit": n,
            "ttl": 3600,
        },
        "keys": {"prefix": PREFIX},
        "run": {"lockfile": str(path.with_suffix(".lock")), "log": str(path.with_suffix(".jsonl"))},
        "audit": {"recheck_after": RECHECK_AFTER_S},
    }
    text = "".join(
        f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in items.items())
        for name, items in sections.items()
    )
    path.write_text(text, encoding="utf-8")
    return path


def cachewarm(config: Path, *args: str) -> Sample:
    """One command of the working tree's cachewarm; exit 1 is audit's "something is stale"."""
    argv = [sys.executable, "-m", "cachewarm", "--config", str(config), *args]
    return run_child(argv, ok=(0, 1) if "audit" in args else (0,))


def query(url: str, statement: str) -> int:
    """Run one statement (autocommit); the first column of its first row, or its row count."""
    conn = shop.connect(url)
    try:
        with conn.cursor() as cur:
            count = cur.execute(statement)
            row = cur.fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else int(count)


class Phase:
    """One timed command, repeated; its reports checked against what it must find."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.samples: list[Sample] = []
        self.reports: list[dict[str, object]] = []

    def run(self, config: Path, *args: str) -> dict[str, object]:
        sample = cachewarm(config, "audit", "--json", *args)
        self.samples.append(sample)
        report: dict[str, object] = json.loads(sample.stdout)
        self.reports.append(report)
        log(f"{self.name}: {sample.wall_s:.2f} s, {json.dumps(_counts(report))}")
        return report

    def row(self) -> str:
        wall = statistics.median(s.wall_s for s in self.samples)
        rss = statistics.median(s.maxrss_kb for s in self.samples) / 1024
        counts = _counts(self.reports[-1])
        found = ", ".join(f"{k} {v}" for k, v in counts.items())
        return f"| {self.name} | {wall:.2f} s | {rss:.0f} MB | {len(self.samples)} | {found} |"


def _counts(report: dict[str, object]) -> dict[str, object]:
    return {k: report[k] for k in ("checked", "stale", "missing", "rechecked", "fixed")}


def bench(n: int, repeat: int, work: Path) -> tuple[list[Phase], list[str], float]:
    """The phases, the failed checks, and the seconds the warm took (for scale)."""
    mysql = servers.start_mariadb(work / "mariadb")
    rd = servers.start_redis(work / "redis")
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            failures.append(what)
            log(f"CHECK FAILED: {what}")

    try:
        db_url = f"{mysql.url}/cwbench_audit"
        log(f"seeding {n} products")
        SAMPLE.seed(mysql.url, n, "cwbench_audit")
        config = write_config(work / "audit.toml", db_url, rd.url, SAMPLE, n)
        warm = cachewarm(config, "run", "--full")
        log(f"warm: {warm.wall_s:.2f} s")
        sample, clean, stale, after_fix = (
            Phase("`audit` (sample of 1000), nothing stale"),
            Phase(f"`audit --all`, nothing stale ({human(n)} listings)"),
            Phase(f"`audit --all`, 1% stale (re-check after {RECHECK_AFTER_S:g} s)"),
            Phase("`audit --all` after `audit --all --fix`"),
        )
        for _ in range(repeat):
            r = sample.run(config)
            check(r["checked"] == min(1000, n) and r["stale"] == 0, f"sample: {_counts(r)}")
            r = clean.run(config, "--all")
            check(r["checked"] == n and r["stale"] == 0, f"clean --all: {_counts(r)}")
        updated = query(db_url, SAMPLE.update_1pct)
        for _ in range(repeat):
            r = stale.run(config, "--all")
            check(r["checked"] == n and r["stale"] == updated, f"1% --all: {_counts(r)}")
        fix = cachewarm(config, "audit", "--all", "--fix", "--json")
        fixed = json.loads(fix.stdout)
        log(f"--all --fix: {fix.wall_s:.2f} s, {json.dumps(_counts(fixed))}")
        check(fixed["fixed"] == updated, f"--fix: {_counts(fixed)}")
        for _ in range(repeat):
            r = after_fix.run(config, "--all")
            check(r["checked"] == n and r["stale"] == 0, f"after --fix: {_counts(r)}")
        return [sample, clean, stale, after_fix], failures, warm.wall_s
    finally:
        rd.stop()
        mysql.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=100_000, help="products, every one hot")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per phase (median)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    load_before = load_average()
    idle_cores = busy_cores(5)
    with tempfile.TemporaryDirectory(prefix="cwbench-audit-") as tmp:
        phases, failures, warm_s = bench(args.size, args.repeat, Path(tmp))
    load_after = load_average()
    report = "\n".join(
        [
            f"# `cachewarm audit` at {args.size:,} cached listings",
            "",
            f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"driver {driver_name('auto')}; sample catalog, every product hot, one Redis and "
            f"one MariaDB on this machine. Whole processes (start-up included), median of "
            f"{args.repeat}; the warm that filled the cache took {warm_s:.2f} s. Load average "
            f"(1/5/15 min) before: {load_before}, after: {load_after}; cores busy machine-wide "
            f"before the servers started: {idle_cores:.2f} of {os.cpu_count()}.",
            "",
            "| command | wall | peak RSS | runs | found (last run) |",
            "|---|---:|---:|---:|---|",
            *(p.row() for p in phases),
            "",
            "Checks: " + ("all passed." if not failures else "FAILED: " + "; ".join(failures)),
            "",
            f"Command: `.venv/bin/python bench/audit.py --size {args.size} --repeat {args.repeat}`",
            "",
        ]
    )
    out = args.out / f"{datetime.date.today().isoformat()}-audit-{human(args.size)}.md"
    out.write_text(report, encoding="utf-8")
    print(report)
    log(f"wrote {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
