"""Where a `cachewarm run` spends its time: cProfile of cachewarm.warm plus server CPU.

Runs inside one of bench/run.py's installs of the working tree (built or reused under
bench/work/; `--install default` is `pip install .`, `fast` is `pip install '.[fast]'`,
`dev` is whatever the current interpreter imports). Starts throwaway servers, seeds N
products (every one hot), does one untimed warm to warm the caches, then profiles one
warm in-process and prints:

- wall time, this process's CPU, and the CPU mariadbd and redis-server used meanwhile
  (from /proc), with Redis' own time inside EVAL (INFO commandstats);
- the profile grouped by where the time goes (PyMySQL, JSON, RESP packing, waiting on
  each socket, ...): builtins such as socket reads are charged to the caller's module;
- the top functions by own time.

    .venv/bin/python bench/profile_warm.py --n 100000                  # default install
    .venv/bin/python bench/profile_warm.py --n 100000 --install fast   # the fast extra
    .venv/bin/python bench/profile_warm.py --n 100000 --steady   # changed_query, 1% changed
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "examples"), str(HERE.parent / "scripts")]

import seed as shop  # noqa: E402  (examples/seed.py)
import servers  # noqa: E402  (scripts/servers.py)
from catalog import CATALOGS  # noqa: E402
from installs import SPECS, ensure_install, snapshot_source  # noqa: E402
from proc import CHILD_ENV  # noqa: E402
from variants import write_config  # noqa: E402

from cachewarm import orchestrate as api  # noqa: E402
from cachewarm import output  # noqa: E402
from cachewarm.config import load_settings  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
IN_INSTALL = "CWBENCH_PROFILE_INSTALL"  # set once re-executed inside the chosen install

# (substring of a code path or function name, group); first match wins.
GROUPS = [
    ("pymysql/", "PyMySQL: protocol, row parsing, value decoding"),
    ("MySQLdb/", "mysqlclient: row fetching and value decoding"),
    ("orjson", "JSON encoding (ListingEncoder + orjson)"),
    ("cachewarm/mysql/encode.py", "JSON encoding (ListingEncoder + json)"),
    ("json/", "JSON encoding (ListingEncoder + json)"),
    ("_json", "JSON encoding (ListingEncoder + json)"),
    ("cachewarm/store/", "Redis: RESP packing, send, reply (cachewarm/store)"),
    ("hiredis", "Redis: redis-py (connect, reply parsing, publish)"),
    ("redis/", "Redis: redis-py (connect, reply parsing, publish)"),
    ("cachewarm/mysql/source.py", "source.py glue (hot ids, listings generator)"),
    ("cachewarm/orchestrate.py", "orchestration glue (warm, publish)"),
    ("cachewarm/pipeline.py", "the batch loop (Reader)"),
    ("random.py", "random.randrange for the TTL jitter offset"),
    ("structlog/", "logging"),
]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def group_of(func: tuple[str, int, str]) -> str | None:
    path, _, name = func
    for needle, group in GROUPS:
        if needle in path or needle in name:
            return group
    return None


def grouped(stats: pstats.Stats) -> dict[str, float]:
    """Own time per group; a builtin's own time goes to the groups of its callers."""
    totals: dict[str, float] = defaultdict(float)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, dict[object, object]]]
    raw = stats.stats  # type: ignore[attr-defined]
    for func, (_, _, tottime, _, callers) in raw.items():
        group = group_of(func)
        if group is not None or not callers:
            totals[group or f"other: {func[2]}"] += tottime
            continue
        edges = {c: float(v[2]) for c, v in callers.items()}  # type: ignore[index]
        edge_total = sum(edges.values()) or 1.0
        for caller, t in edges.items():
            share = tottime * t / edge_total
            assert isinstance(caller, tuple)
            totals[group_of(caller) or f"other: {func[2]} from {caller[2]}"] += share
    return dict(totals)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=100_000, help="products, all hot")
    parser.add_argument(
        "--install",
        choices=(*SPECS, "dev"),
        default="default",
        help="which install of the working tree to profile (dev: this interpreter's)",
    )
    parser.add_argument(
        "--steady", action="store_true", help="changed_query set, profile a run after 1%% changed"
    )
    parser.add_argument("--catalog", choices=tuple(CATALOGS), default="sample")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--save", type=Path, help="also write the raw profile here (pstats)")
    args = parser.parse_args(argv)
    if args.install != "dev" and os.environ.get(IN_INSTALL) != args.install:
        with tempfile.TemporaryDirectory(prefix="cwprof-src-") as tmp:
            src = snapshot_source(Path(tmp) / "cachewarm-src")
            install = ensure_install(args.install, src)
        print(install.describe(), flush=True)
        env = {**CHILD_ENV, IN_INSTALL: args.install}
        argv0 = [install.python, str(Path(__file__).resolve())]
        rest = sys.argv[1:] if argv is None else argv
        return subprocess.run([*argv0, *rest], env=env, check=False).returncode

    work = Path(tempfile.mkdtemp(prefix="cwprof-"))
    db = rd = None
    try:
        db = servers.start_mariadb(work / "mariadb")
        rd = servers.start_redis(work / "redis")
        catalog = CATALOGS[args.catalog]
        database = f"bench_{catalog.name}_{args.n}"
        catalog.seed(db.url, args.n, database)
        redis_url = rd.url.rsplit("/", 1)[0] + "/3"
        config = write_config(
            work / "cw.toml",
            catalog,
            mysql_url=f"{db.url}/{database}",
            redis_url=redis_url,
            limit=args.n,
            steady=args.steady,
        )
        settings = load_settings(config)
        # as the CLI under cron: warnings only (unconfigured structlog prints debug too)
        output.configure(verbose=False, quiet=False, fmt="json", secrets=[])
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        api.warm(settings)  # warm caches; also the base state for --steady
        if args.steady:
            conn = shop.connect(f"{db.url}/{database}")
            with conn.cursor() as cur:
                cur.execute(catalog.update_1pct)
            conn.close()
        else:
            client.flushdb()
        client.config_resetstat()
        assert db.pid is not None and rd.pid is not None
        db_cpu, rd_cpu = cpu_seconds(db.pid), cpu_seconds(rd.pid)
        cpu0, t0 = time.process_time(), time.perf_counter()
        profile = cProfile.Profile()
        record = profile.runcall(api.warm, settings)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        db_cpu, rd_cpu = cpu_seconds(db.pid) - db_cpu, cpu_seconds(rd.pid) - rd_cpu
        commands = client.info("commandstats")
        # the same run again without the profiler, for scale
        client.flushdb()
        api.warm(settings)
        if args.steady:
            conn = shop.connect(f"{db.url}/{database}")
            with conn.cursor() as cur:
                cur.execute(catalog.update_1pct)
            conn.close()
        else:
            client.flushdb()
        t1 = time.perf_counter()
        api.warm(settings)
        bare = time.perf_counter() - t1
    finally:
        for server in (db, rd):
            if server is not None:
                server.stop()
        shutil.rmtree(work, ignore_errors=True)

    what = "steady state (1% changed)" if args.steady else "full warm from empty"
    print(
        f"cachewarm.warm ({args.install} install), N={args.n}, {what}: mode {record.mode}, "
        f"{record.written} written, {record.unchanged} unchanged"
    )
    print(f"  wall without profiler {bare:.2f}s; with profiler {wall:.2f}s")
    print(
        f"  this process CPU {cpu:.2f}s | mariadbd CPU {db_cpu:.2f}s | "
        f"redis-server CPU {rd_cpu:.2f}s"
    )
    for name, stat in sorted(commands.items()):
        if isinstance(stat, dict) and stat.get("usec", 0) > 10_000:
            print(f"  redis {name}: {stat['calls']} calls, {stat['usec'] / 1e6:.2f}s inside Redis")
    stats = pstats.Stats(profile)
    total = sum(grouped(stats).values())
    print(f"\nprofile, own time by group (profiled total {total:.2f}s):")
    for group, seconds in sorted(grouped(stats).items(), key=lambda kv: -kv[1])[:20]:
        print(f"  {seconds:6.2f}s {100 * seconds / total:5.1f}%  {group}")
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.top)
    print("\n" + "\n".join(out.getvalue().splitlines()[6:]))
    if args.save:
        profile.dump_stats(args.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
