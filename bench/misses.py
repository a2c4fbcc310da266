"""Benchmark the miss stream: how fast a run drains it, and report-to-cached latency.

Starts a throwaway MariaDB and Redis, seeds the sample shop, then:

1. drain: `--entries` reports of distinct products are queued (as readers send them,
   with MAXLEN ~ above the count) and one `cachewarm.warm` with a one-product hot set
   and `miss_per_run` = `--entries` drains them; the run's own timing is reported;
2. latency: the follower's drain (`cachewarm.misses.draining`, what `follow` runs) is
   started, and one client reports `--rate` misses per second for `--seconds`; Redis
   keyspace notifications time each listing's write against its XADD;
3. the Redis side: `redis-benchmark` XADDs with MAXLEN ~ 10000, pipelined 16 deep,
   which bounds what one master (a cluster's stream too lives on one) takes.

    .venv/bin/python bench/misses.py --products 20000 --entries 10000 --rate 1000

Results go to bench/results/<date>-misses.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis
import redis.exceptions

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "examples"), str(ROOT / "scripts"), str(ROOT)]

import seed as shop  # noqa: E402  (examples/seed.py)
import servers  # noqa: E402  (scripts/servers.py)

import cachewarm  # noqa: E402
from cachewarm import misses, output  # noqa: E402
from cachewarm.config import Settings, load_settings  # noqa: E402

PREFIX = "benchmisses"


def _settings(work: Path, db_url: str, redis_url: str, per_run: int) -> Settings:
    path = work / "misses.toml"
    path.write_text(
        f'[mysql]\nurl = "{db_url}"\n[redis]\nurl = "{redis_url}"\n'
        f'[warm]\nhot_query = "SELECT id FROM products ORDER BY id LIMIT %(limit)s"\n'
        f'listing_query = """{shop.LISTING_QUERY}"""\nlimit = 1\nmiss_per_run = {per_run}\n'
        f"miss_queue_max = {max(per_run, 10_000)}\n"
        f'[keys]\nprefix = "{PREFIX}"\n'
        f'[run]\nlockfile = "{work / "cw.lock"}"\nlog = "{work / "runs.jsonl"}"\n'
    )
    return load_settings(path, env={})


def drain(settings: Settings, client: redis.Redis, products: int, entries: int) -> dict[str, float]:
    """One run draining `entries` queued reports of distinct products."""
    key = settings.keys.misses
    pipe = client.pipeline(transaction=False)
    for n in range(entries):
        pipe.xadd(key, {"id": str(n % products + 1)}, maxlen=entries + 1000, approximate=True)
    pipe.execute()
    began = time.monotonic()
    record = cachewarm.warm(settings)
    elapsed = time.monotonic() - began
    if record.status != "ok" or record.miss_taken != entries:
        raise SystemExit(f"the drain run went wrong: {record}")
    return {"seconds": elapsed, "filled": record.miss_filled, "rate": entries / elapsed}


def latency(
    settings: Settings, client: redis.Redis, products: int, rate: int, seconds: float
) -> list[float]:
    """XADD-to-written seconds of each report at `rate` per second, the follower draining."""
    client.config_set("notify-keyspace-events", "K$")
    pubsub = client.pubsub()  # type: ignore[no-untyped-call,unused-ignore]
    pubsub.psubscribe(f"__keyspace@0__:{PREFIX}:v1:product:*")
    written: dict[int, float] = {}
    stop = threading.Event()

    def listen() -> None:
        with contextlib.suppress(redis.exceptions.ConnectionError, ValueError):  # closed at the end
            for message in pubsub.listen():  # type: ignore[no-untyped-call,unused-ignore]
                if message["type"] == "pmessage":
                    product = int(message["channel"].rpartition(b":")[2])
                    written.setdefault(product, time.monotonic())
                if stop.is_set():
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    reported: dict[int, float] = {}
    total = int(rate * seconds)
    offset = products // 2  # products the drain phase did not fill
    with misses.draining(settings, misses.MissCounts()):
        time.sleep(0.5)  # the drain thread's connections
        began = time.monotonic()
        for n in range(total):
            product = offset + n % (products - offset) + 1
            if product in reported:
                continue
            reported[product] = time.monotonic()
            client.xadd(settings.keys.misses, {"id": str(product)}, maxlen=10_000, approximate=True)
            pause = began + (n + 1) / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        give_up = time.monotonic() + 30
        while len(written.keys() & reported.keys()) < len(reported) and time.monotonic() < give_up:
            time.sleep(0.05)
    stop.set()
    pubsub.close()
    lost = [p for p in reported if p not in written]
    if lost:
        raise SystemExit(f"{len(lost)} reported misses were never filled")
    return sorted(written[p] - t for p, t in reported.items())


def xadd_capacity(server: servers.Server) -> str:
    """redis-benchmark's XADD rate on one Redis, or why it could not run."""
    tool = shutil.which("redis-benchmark")
    if tool is None:
        return "redis-benchmark not installed"
    command = ["XADD", "benchxadd", "MAXLEN", "~", "10000", "*", "id", "12345"]
    out = subprocess.run(
        [
            tool,
            "-h",
            server.host,
            "-p",
            str(server.port),
            "-n",
            "200000",
            "-P",
            "16",
            "-q",
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    found = re.findall(r"([\d.]+) requests per second", out)
    return f"{float(found[-1]):,.0f} XADD/s" if found else out.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    output.configure(verbose=False, quiet=True, fmt="auto", secrets=[])  # the table only
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    with tempfile.TemporaryDirectory(prefix="cwbench-misses-") as tmp:
        work = Path(tmp)
        db = servers.start_mariadb(work / "db")
        rd = servers.start_redis(work / "redis")
        try:
            url = f"{db.url}/shop"
            shop.seed(url, args.products)
            settings = _settings(work, url, rd.url, args.entries)
            client = redis.Redis.from_url(rd.url)
            try:
                drained = drain(settings, client, args.products // 2, args.entries)
                lat = latency(settings, client, args.products, args.rate, args.seconds)
                capacity = xadd_capacity(rd)
            finally:
                client.close()
        finally:
            db.stop()
            rd.stop()
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    p99 = lat[max(int(len(lat) * 0.99) - 1, 0)]
    lines = [
        f"# Miss stream benchmark, {datetime.date.today()}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {args.products} products.",
        f"Command: `{' '.join(['bench/misses.py', *sys.argv[1:]])}`.",
        f"`uptime` before: `{uptime_before.strip()}`; after: `{uptime_after.strip()}`",
        "(a load average above ~0.5 means other work shared the machine: every figure is"
        " pessimistic then).",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| run draining {args.entries} reports (+ a one-product warm) | "
        f"{drained['seconds']:.2f} s |",
        f"| drain rate | {drained['rate']:,.0f} entries/s |",
        f"| follower: reports at {args.rate}/s for {args.seconds:g} s | {len(lat)} |",
        f"| report-to-written latency p50 | {statistics.median(lat) * 1000:.0f} ms |",
        f"| report-to-written latency p99 | {p99 * 1000:.0f} ms |",
        f"| max | {lat[-1] * 1000:.0f} ms |",
        f"| one Redis taking XADD MAXLEN ~ 10000, pipelined 16 deep | {capacity} |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "bench" / "results" / f"{datetime.date.today()}-misses.md"
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
