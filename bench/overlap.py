"""Would reading with two processes pay? CPU of a full warm per process, and a split warm.

For each catalog and install: one `cachewarm run` full warm from empty Redis, timed as a
whole process, with the CPU seconds it, mariadbd and redis-server used meanwhile; then
two `cachewarm run` processes at once, each warming half of the hot ids (`id % 2`) into
its own Redis database. The split is an upper bound on what worker processes could give
on this machine: each half pays its own start-up, connections and hot query, which a
design that forks after the hot query would not; and that design itself, as the
experiment bench/forked_warm.py with two workers.

    .venv/bin/python bench/overlap.py --catalog narrow,sample --size 100k --repeat 3

Read "CPU sum / wall": near 2 on 2 cores, the warm already keeps both busy and a split
cannot help; near 1, the three processes take turns and a split may. Only a quiet
machine can answer this: another workload takes the second core either way. The load
average and `uptime` are printed with the results.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "examples"), str(HERE.parent / "scripts")]

import redis  # noqa: E402
import servers  # noqa: E402  (scripts/servers.py)
from catalog import CATALOGS, Catalog  # noqa: E402
from installs import SPECS, ensure_install, snapshot_source  # noqa: E402
from proc import CHILD_ENV, load_average, log  # noqa: E402
from run import parse_names, parse_sizes  # noqa: E402
from variants import write_config  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int | None) -> float:
    """User + system CPU seconds of a server process so far."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Sample:
    wall: float
    client: float  # CPU of the cachewarm process(es)
    mariadb: float
    redis: float


def timed(argvs: list[list[str]], db: servers.Server, rd: servers.Server) -> Sample:
    """Run these commands at once; wall time to the last exit, CPU of each side meanwhile."""
    cpu0, m0, r0 = children_cpu(), server_cpu(db.pid), server_cpu(rd.pid)
    t0 = time.perf_counter()
    procs = [subprocess.Popen(argv, env=CHILD_ENV, stderr=subprocess.PIPE) for argv in argvs]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"cachewarm exited {proc.returncode}: {err.decode()[-2000:]}")
    wall = time.perf_counter() - t0
    return Sample(wall, children_cpu() - cpu0, server_cpu(db.pid) - m0, server_cpu(rd.pid) - r0)


def half(catalog: Catalog, parity: int) -> Catalog:
    """The catalog with a hot query for the hot ids of one parity."""
    hot = f"SELECT id FROM ({catalog.hot_query}) h WHERE id %% 2 = {parity}"
    return replace(catalog, hot_query=hot)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--catalog", type=lambda t: parse_names(t, dict(CATALOGS), "catalog"), default=["narrow"]
    )
    parser.add_argument("--size", type=lambda t: parse_sizes(t)[0], default=100_000)
    parser.add_argument(
        "--installs", type=lambda t: parse_names(t, dict(SPECS), "install"), default=["default"]
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cwbench-src-") as tmp:
        src = snapshot_source(Path(tmp) / "cachewarm-src")
        installs = [ensure_install(name, src) for name in args.installs]
    load_before = load_average()
    rows: list[str] = []
    n = args.size
    with tempfile.TemporaryDirectory(prefix="cwbench-") as tmp:
        work = Path(tmp)
        db = servers.start_mariadb(work / "mariadb")
        rd = servers.start_redis(work / "redis")
        base = rd.url.rsplit("/", 1)[0]
        try:
            for name in args.catalog:
                catalog = CATALOGS[name]
                database = f"overlap_{name}"
                catalog.seed(db.url, n, database)
                for install in installs:
                    configs = []
                    for i, variant in enumerate((catalog, half(catalog, 0), half(catalog, 1))):
                        own = work / f"{install.name}-{name}-{i}"  # lock and run log apart
                        own.mkdir()
                        configs.append(
                            write_config(
                                own / "cachewarm.toml",
                                variant,
                                mysql_url=f"{db.url}/{database}",
                                redis_url=f"{base}/{i + 1}",
                                limit=n,
                                steady=False,
                            )
                        )
                    argvs = [[install.cachewarm, "--config", str(c), "run"] for c in configs]
                    forked = [install.python, str(HERE / "forked_warm.py"), str(configs[0]), "2"]
                    one: list[Sample] = []
                    split: list[Sample] = []
                    fork: list[Sample] = []
                    for rep in range(args.repeat + 1):  # the first round warms caches
                        redis.Redis.from_url(base).flushall()
                        a = timed(argvs[:1], db, rd)
                        b = timed(argvs[1:], db, rd)
                        redis.Redis.from_url(base).flushall()
                        c = timed([forked], db, rd)
                        if rep:
                            one.append(a)
                            split.append(b)
                            fork.append(c)
                    for label, samples in (
                        ("one process", one),
                        ("two halves at once", split),
                        ("forked after the hot query, 2 workers", fork),
                    ):
                        wall = statistics.median(s.wall for s in samples)
                        client = statistics.median(s.client for s in samples)
                        mariadb = statistics.median(s.mariadb for s in samples)
                        red = statistics.median(s.redis for s in samples)
                        ratio = wall / statistics.median(s.wall for s in one)
                        rows.append(
                            f"| {name} | {install.name} | {label} | {wall:.2f} | {ratio:.2f}x "
                            f"| {client:.2f} | {mariadb:.2f} | {red:.2f} "
                            f"| {(client + mariadb + red) / wall:.2f} |"
                        )
                    log(f"{name} {install.name}: done")
        finally:
            rd.stop()
            db.stop()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    print(f"N={n}, medians of {args.repeat}; {os.cpu_count()} cores")
    print(f"Load average before: {load_before}; after: {load_average()}; uptime: {uptime.strip()}")
    print()
    print(
        "| catalog | install | warm | wall s | vs one | cachewarm CPU s | mariadbd CPU s "
        "| redis-server CPU s | CPU sum / wall |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
