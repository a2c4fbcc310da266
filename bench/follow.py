"""Benchmark `cachewarm follow`: row events per second, edit-to-invalidation latency, memory.

Starts a throwaway MariaDB with a ROW binlog and a throwaway Redis, seeds the sample
shop, and runs the follower as its own process (`python -m cachewarm follow`), as
systemd would:

1. backlog: with the follower stopped, `--events` product rows are updated in
   transactions of 1000 rows; the follower is then started from its checkpoint and
   timed until its checkpoint reaches the end of the binlog. Its peak RSS (VmHWM) is
   sampled along the way, to show whether memory stays flat over the backlog;
2. latency: with the follower live, one connection commits `--rate` single-row UPDATEs
   per second for `--seconds`; each edited product has a listing key set just before,
   and Redis keyspace notifications time its deletion against the commit.

    .venv/bin/python bench/follow.py --events 1000000 --rate 1000 --seconds 10

Results go to bench/results/<date>-follow.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pymysql
import redis
import redis.exceptions

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "examples"), str(ROOT / "scripts")]

import seed as shop  # noqa: E402  (examples/seed.py)
import servers  # noqa: E402  (scripts/servers.py)

PREFIX = "benchfollow"
ROWS_PER_TRANSACTION = 1000


def _config(work: Path, db_url: str, redis_url: str) -> Path:
    path = work / "follow.toml"
    path.write_text(
        f'[mysql]\nurl = "{db_url}"\n[redis]\nurl = "{redis_url}"\n'
        f'[keys]\nprefix = "{PREFIX}"\n'
        f'[run]\nlockfile = "{work / "cw.lock"}"\nlog = "{work / "runs.jsonl"}"\n'
        f'[follow]\ntables = {{ "products" = "id" }}\ncheckpoint = "{work / "follow.json"}"\n'
    )
    return path


def _follower(config: Path, *flags: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """The follower of the working tree, or of the source tree `cwd` (first on sys.path)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cachewarm", "--config", str(config), "follow", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
    )


def _checkout(rev: str, into: Path) -> Path:
    """The cachewarm package as of `rev`, to run the baseline follower from."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "cachewarm"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    if proc.wait(timeout=60) != 0:
        raise SystemExit(f"follower exited {proc.returncode}")


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _checkpoint(work: Path) -> tuple[str, int]:
    try:
        data = json.loads((work / "follow.json").read_text())
    except (OSError, ValueError):
        return ("", 0)
    return (data["position"]["file"], data["position"]["pos"])


def _master(conn: pymysql.connections.Connection) -> tuple[str, int]:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    assert row is not None
    return (str(row[0]), int(row[1]))


def _wait_checkpoint(work: Path, target: tuple[str, int], timeout: float = 3600) -> None:
    give_up = time.monotonic() + timeout
    while _checkpoint(work) < target:
        if time.monotonic() > give_up:
            raise SystemExit("the follower never caught up")
        time.sleep(0.01)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backlog(
    config: Path,
    work: Path,
    conn: pymysql.connections.Connection,
    products: int,
    events: int,
    baseline: Path | None,
) -> dict[str, dict[str, float]]:
    """Follow a backlog of `events` row events: the working tree's follower, then the baseline's.

    Both start from the same checkpoint over the same binlog, in this run.
    """
    proc = _follower(config, "--from-now")
    while _checkpoint(work) == ("", 0):
        time.sleep(0.01)
    _stop(proc)
    start = (work / "follow.json").read_bytes()
    done = 0
    with conn.cursor() as cur:
        while done < events:
            first = done % products
            n = min(ROWS_PER_TRANSACTION, events - done, products - first)
            cur.execute(
                "UPDATE products SET weight_kg = COALESCE(weight_kg, 0) + 1 "
                "WHERE id > %s AND id <= %s",
                (first, first + n),
            )
            done += n
    end = _master(conn)
    results = {"this": _catch_up(config, work, end, events, None)}
    if baseline is not None:
        (work / "follow.json").write_bytes(start)
        results["baseline"] = _catch_up(config, work, end, events, baseline)
    return results


def _catch_up(
    config: Path, work: Path, end: tuple[str, int], events: int, source: Path | None
) -> dict[str, float]:
    """Row events per second, CPU seconds per 100k, and peak RSS at 10%, 50% and 100%."""
    began = time.monotonic()
    proc = _follower(config, cwd=source)
    samples: dict[str, float] = {}
    first = _checkpoint(work)
    try:
        while _checkpoint(work) < end:
            file, pos = _checkpoint(work)
            share = (pos - first[1]) / max(1, end[1] - first[1]) if file == end[0] else 0
            for mark in (0.1, 0.5):
                if share >= mark and f"rss_{mark}" not in samples:
                    samples[f"rss_{mark}"] = _hwm_mb(proc.pid)
            time.sleep(0.01)
        elapsed = time.monotonic() - began
        samples["rss_1.0"] = _hwm_mb(proc.pid)
        samples["cpu_per_100k"] = _cpu_s(proc.pid) * 100_000 / events
    finally:
        _stop(proc)
    samples["events_per_s"] = events / elapsed
    samples["seconds"] = elapsed
    return samples


def latency(
    config: Path,
    work: Path,
    db_url: str,
    client: redis.Redis,
    products: int,
    rate: int,
    seconds: float,
) -> list[float]:
    """Commit-to-deletion seconds of every edit at `rate` edits per second."""
    client.config_set("notify-keyspace-events", "Eg")
    pubsub = client.pubsub()  # type: ignore[no-untyped-call,unused-ignore]
    pubsub.psubscribe("__keyevent@0__:del")
    deleted: dict[bytes, float] = {}

    def listen() -> None:
        with contextlib.suppress(redis.exceptions.ConnectionError):  # closed at the end
            for message in pubsub.listen():  # type: ignore[no-untyped-call,unused-ignore]
                if message["type"] == "pmessage":
                    deleted[message["data"]] = time.monotonic()
                if stop.is_set():
                    return

    stop = threading.Event()
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    proc = _follower(config)
    committed: dict[bytes, float] = {}
    conn = shop.connect(db_url, local_infile=False)
    try:
        time.sleep(1)  # the follower's start-up checks and first heartbeat
        total = int(rate * seconds)
        began = time.monotonic()
        with conn.cursor() as cur:
            for n in range(total):
                product = n % products + 1
                key = f"{PREFIX}:v1:product:{product}".encode()
                client.set(key, b"{}")
                cur.execute(
                    "UPDATE products SET weight_kg = COALESCE(weight_kg, 0) + 1 WHERE id = %s",
                    (product,),
                )
                committed[key] = time.monotonic()
                pause = began + (n + 1) / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
        give_up = time.monotonic() + 30
        while len(deleted) < len(committed) and time.monotonic() < give_up:
            time.sleep(0.05)
    finally:
        stop.set()
        conn.close()
        _stop(proc)
        pubsub.close()
    missing = [k for k in committed if k not in deleted]
    if missing:
        raise SystemExit(f"{len(missing)} edits were never invalidated")
    return [deleted[k] - t for k, t in committed.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also follow the backlog with the follower of this git revision, for a ratio",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cwbench-follow-") as tmp:
        work = Path(tmp)
        db = servers.start_mariadb(work / "db", server_id=1)
        rd = servers.start_redis(work / "redis")
        try:
            url = f"{db.url}/shop"
            shop.seed(url, args.products)
            config = _config(work, url, rd.url)
            conn = shop.connect(url, local_infile=False)
            client = redis.Redis.from_url(rd.url)
            try:
                baseline = _checkout(args.baseline, work / "baseline") if args.baseline else None
                runs = backlog(config, work, conn, args.products, args.events, baseline)
                # Each edit waits for its commit (one at a time, like an admin panel): the
                # rate a single connection reaches is reported alongside.
                lat = sorted(
                    latency(config, work, url, client, args.products, args.rate, args.seconds)
                )
            finally:
                conn.close()
                client.close()
        finally:
            db.stop()
            rd.stop()
    through = runs["this"]
    p50 = statistics.median(lat)
    p99 = lat[int(len(lat) * 0.99) - 1]
    lines = [
        f"# `cachewarm follow` benchmark, {datetime.date.today()}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {args.products} products.",
        f"Command: `{' '.join(['bench/follow.py', *sys.argv[1:]])}`. Load average (1 min)"
        f" before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        " (above ~0.5 other work shared the machine and every figure is pessimistic).",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| backlog of {args.events} row events | {through['seconds']:.1f} s |",
        f"| row events per second | {through['events_per_s']:,.0f} |",
        f"| peak RSS at 10% / 50% / 100% of the backlog | {through.get('rss_0.1', 0):.0f} / "
        f"{through.get('rss_0.5', 0):.0f} / {through['rss_1.0']:.0f} MB |",
        f"| follower CPU per 100k row events (user + system) | {through['cpu_per_100k']:.2f} s |",
        f"| edits at {args.rate}/s for {args.seconds:g} s | {len(lat)} |",
        f"| edit-to-invalidation latency p50 | {p50 * 1000:.0f} ms |",
        f"| edit-to-invalidation latency p99 | {p99 * 1000:.0f} ms |",
        f"| max | {lat[-1] * 1000:.0f} ms |",
    ]
    if "baseline" in runs:
        base = runs["baseline"]
        speed = through["events_per_s"] / base["events_per_s"]
        cpu = through["cpu_per_100k"] / base["cpu_per_100k"]
        lines += [
            "",
            f"The same backlog followed by `{args.baseline}` in this run, after the above:",
            "",
            "| measure | baseline | this tree | ratio |",
            "|---|---:|---:|---:|",
            f"| row events per second | {base['events_per_s']:,.0f} | "
            f"{through['events_per_s']:,.0f} | {speed:.2f} |",
            f"| follower CPU per 100k row events | {base['cpu_per_100k']:.2f} s | "
            f"{through['cpu_per_100k']:.2f} s | {cpu:.2f} |",
            f"| peak RSS at 100% | {base['rss_1.0']:.0f} MB | {through['rss_1.0']:.0f} MB | |",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "bench" / "results" / f"{datetime.date.today()}-follow.md"
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
