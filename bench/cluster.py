"""Benchmark one warm into a local 3-master Redis Cluster against the same warm into one Redis.

Same run, same machine, same seeded MariaDB: starts throwaway servers, then for each
size and repeat times `cachewarm run --full` (a fresh keyspace: every listing new) and a
second run (steady state: every listing unchanged) into each topology, alternating
which goes first. Checks both topologies hold identical listings, and writes a Markdown
table to bench/results/:

    .venv/bin/python bench/cluster.py --sizes 100000 --repeat 3

The goal (issue 7): at 1M listings the cluster warm within 1.3x of the single-Redis
warm's time, and its peak RSS within +30 MB.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.cluster import RedisCluster

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "examples"), str(ROOT / "scripts")]

import seed as shop  # noqa: E402
import servers  # noqa: E402

from cachewarm.mysql.source import driver_name  # noqa: E402

CACHEWARM = ROOT / ".venv" / "bin" / "cachewarm"
TIME = "/usr/bin/time"  # GNU time, for peak RSS
PREFIX = "bench"
# Every product hot, hottest first (bench/run.py's ranking, kept in step by hand).
HOT_QUERY_ALL = (
    "SELECT p.id FROM products p LEFT JOIN (SELECT product_id, SUM(qty) AS q FROM order_lines "
    "WHERE ordered_at >= NOW() - INTERVAL 1 DAY GROUP BY product_id) s ON s.product_id = p.id "
    "ORDER BY COALESCE(s.q, 0) DESC, p.id LIMIT %(limit)s"
)
CHILD_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Sample:
    seconds: float
    rss_kb: int
    cpu_s: float  # user + system CPU of the cachewarm process: what the client costs


def timed_run(config: Path, *args: str) -> Sample:
    """`cachewarm run` under GNU time: wall seconds, peak RSS and CPU of the process."""
    with tempfile.NamedTemporaryFile("r") as rss:
        argv = [TIME, "-f", "%M %U %S", "-o", rss.name, str(CACHEWARM), "--config", str(config)]
        t0 = time.perf_counter()
        done = subprocess.run(
            [*argv, "run", *args], env=CHILD_ENV, capture_output=True, text=True, check=False
        )
        seconds = time.perf_counter() - t0
        peak = rss.read().split()
    if done.returncode != 0:
        raise RuntimeError(f"cachewarm run exited {done.returncode}: {done.stderr[-2000:]}")
    if len(peak) < 3:
        raise RuntimeError(f"no measurement from {TIME}: {peak}")
    return Sample(seconds, int(peak[-3]), float(peak[-2]) + float(peak[-1]))


def write_config(path: Path, mysql_url: str, redis: dict[str, object], limit: int) -> Path:
    sections: dict[str, dict[str, object]] = {
        "mysql": {"url": mysql_url},
        "redis": redis,
        "warm": {
            "hot_query": HOT_QUERY_ALL,
            "listing_query": shop.LISTING_QUERY,
            "limit": limit,
            "ttl": 3600,
        },
        "keys": {"prefix": PREFIX},
        "run": {
            "lockfile": str(path.with_suffix(".lock")),
            "log": str(path.with_suffix(".runs.jsonl")),
            "max_seconds": 3600,
        },
    }
    text = "".join(
        f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in items.items())
        for name, items in sections.items()
    )
    path.write_text(text, encoding="utf-8")
    return path


def clear(client: redis.Redis | RedisCluster) -> None:
    """Empty the throwaway servers between runs (every master of the cluster)."""
    if isinstance(client, RedisCluster):
        client.flushall(target_nodes=RedisCluster.PRIMARIES)
    else:
        client.flushall()


def listing_keys(limit: int) -> Iterator[list[str]]:
    for start in range(1, limit + 1, 5000):
        yield [f"{PREFIX}:v1:product:{i}" for i in range(start, min(start + 5000, limit + 1))]


def same_listings(single: redis.Redis, cluster: RedisCluster, limit: int) -> int:
    """How many listings both hold, failing on any difference."""
    count = 0
    for names in listing_keys(limit):
        a, b = single.mget(names), cluster.mget_nonatomic(names)
        if a != b:
            diff = next(n for n, x, y in zip(names, a, b, strict=True) if x != y)
            raise RuntimeError(f"topologies differ at {diff}")
        count += sum(v is not None for v in a)
    return count


@dataclass
class Row:
    size: int
    phase: str
    single: list[Sample]
    cluster: list[Sample]

    def median(self, which: str, attr: str) -> float:
        samples = self.single if which == "single" else self.cluster
        return float(statistics.median(getattr(s, attr) for s in samples))


def bench_size(
    size: int, repeat: int, work: Path, mysql: servers.Server, rd: servers.Server, cl: Sequence[str]
) -> list[Row]:
    log(f"seeding {size} products")
    db = f"cwbench_cluster_{size}"
    shop.seed(f"{mysql.url}/{db}", size)
    url = f"{mysql.url}/{db}"
    single_cfg = write_config(work / "single.toml", url, {"url": rd.url}, size)
    cluster_cfg = write_config(
        work / "cluster.toml",
        url,
        {"url": f"redis://{cl[0]}/0", "mode": "cluster", "nodes": list(cl[1:])},
        size,
    )
    single_client = redis.Redis.from_url(rd.url)
    cluster_client = RedisCluster.from_url(f"redis://{cl[0]}/0")
    full = Row(size, "full warm (all new)", [], [])
    steady = Row(size, "second warm (all unchanged)", [], [])
    try:
        for i in range(repeat):
            order = [("single", single_cfg), ("cluster", cluster_cfg)]
            for name, config in order if i % 2 == 0 else order[::-1]:
                clear(single_client if name == "single" else cluster_client)
                first = timed_run(config, "--full")
                second = timed_run(config, "--full")
                getattr(full, name).append(first)
                getattr(steady, name).append(second)
                log(f"{size} {name} #{i + 1}: {first.seconds:.2f} s / {second.seconds:.2f} s")
        found = same_listings(single_client, cluster_client, size)
        if found != size:
            raise RuntimeError(f"expected {size} listings, found {found}")
    finally:
        single_client.close()
        cluster_client.close()
        conn = shop.connect(mysql.url, server_only=True, local_infile=False)
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {db}")
        conn.close()
    return [full, steady]


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| size | run | one Redis | 3-master cluster | ratio | client CPU one / cluster "
        "| peak RSS one / cluster |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        one, three = r.median("single", "seconds"), r.median("cluster", "seconds")
        rss_one = r.median("single", "rss_kb") / 1024
        rss_three = r.median("cluster", "rss_kb") / 1024
        cpu_one, cpu_three = r.median("single", "cpu_s"), r.median("cluster", "cpu_s")
        lines.append(
            f"| {r.size:,} | {r.phase} | {one:.2f} s | {three:.2f} s | {three / one:.2f}x "
            f"| {cpu_one:.2f} / {cpu_three:.2f} s ({cpu_three / cpu_one:.2f}x) "
            f"| {rss_one:.0f} / {rss_three:.0f} MB (+{rss_three - rss_one:.0f}) |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="100000", help="comma-separated product counts")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cwbench-") as tmp:
        work = Path(tmp)
        mysql = servers.start_mariadb(work / "mariadb")
        rd = servers.start_redis(work / "redis")
        cluster = servers.start_redis_cluster(work / "cluster")
        try:
            rows = [
                row
                for size in sizes
                for row in bench_size(size, args.repeat, work, mysql, rd, cluster.seeds)
            ]
        finally:
            cluster.stop()
            rd.stop()
            mysql.stop()
    driver = driver_name("auto")
    title = f"{datetime.date.today().isoformat()}-cluster-{'_'.join(map(str, sizes))}"
    report = (
        f"# Cluster vs one Redis, {', '.join(f'{s:,}' for s in sizes)} listings\n\n"
        f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"driver {driver} (the worktree's .venv), {args.repeat} runs each, medians. "
        "Every product hot; both topologies on this machine; order alternated per run; "
        "both hold identical listings afterwards. Load average (1 min) before / after: "
        f"{load_before:.1f} / {os.getloadavg()[0]:.1f} (the benchmark itself adds about 1; "
        "more means other work shared the machine).\n\n" + table(rows) + "\n"
    )
    out = ROOT / "bench" / "results" / f"{title}.md"
    out.write_text(report, encoding="utf-8")
    print(report)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
