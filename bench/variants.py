"""The timed variants, each against one seeded catalog, and the checks that they all
wrote the same listings.

Every variant writes into its own Redis logical database so that the key sets and bytes
can be compared afterwards; cachewarm runs as a subprocess of the install under test
with a generated config, exactly as cron would run it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import servers  # scripts/servers.py
from catalog import PREFIX, TTL_S, VERSION, Catalog
from checks import compare_bytes, field_differences, product_keys, values
from installs import SPECS, Install
from proc import ROOT, Sample, busy_cores, human, log, run_child
from report import Result, SizeReport

INVALIDATE_IDS = 10_000
RUNLOG = "cachewarm.runs.jsonl"
FLUSH_TIMEOUT_S = 300
# Redis logical databases: one per variant and install.
DB_C, DB_NAIVE, DB_CHECK = 1, 2, 3
DB_FULL = {name: 4 + i for i, name in enumerate(SPECS)}
DB_STEADY = {name: 4 + len(SPECS) + i for i, name in enumerate(SPECS)}


@dataclass
class Lab:
    """The throwaway servers and scratch directory one benchmark run works in."""

    work: Path
    db: servers.Server
    rd: servers.Server
    repeat: int
    large_repeat: int
    naive_max: int

    @property
    def redis_url(self) -> str:
        return self.rd.url.rsplit("/", 1)[0]

    def rdb(self, db: int) -> redis.Redis:
        # Flushing millions of keys outlasts redis-py's default read timeout (5 s in 8.x).
        return redis.Redis.from_url(self.redis_url, db=db, socket_timeout=FLUSH_TIMEOUT_S)

    def flush(self, db: int) -> None:
        self.rdb(db).flushdb()

    def reps(self, n: int) -> int:
        return self.large_repeat if n >= 1_000_000 and self.large_repeat else self.repeat

    def mariadb_cli(self, database: str) -> list[str]:
        return [
            "mariadb",
            "--no-defaults",
            f"--host={self.db.host}",
            f"--port={self.db.port}",
            "--user=root",
            "--batch",
            "--raw",
            "--skip-column-names",
            "--default-character-set=utf8mb4",
            database,
        ]

    def versions(self) -> dict[str, str]:
        out = run_child([*self.mariadb_cli("mysql"), "-e", "SELECT VERSION()"]).stdout
        info = self.rdb(0).info("server")
        return {"mariadb": out.strip(), "redis": str(info["redis_version"])}

    def settle(self, limit_s: float = 60.0) -> None:
        """Wait until mariadbd is idle: after a bulk load or an UPDATE InnoDB purges in the
        background, which would steal one of two cores from whatever runs next."""
        if self.db.pid is None:
            return
        stat = Path(f"/proc/{self.db.pid}/stat")
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            before = cpu()
            time.sleep(0.5)  # the window in which mariadbd's CPU use is measured
            if cpu() - before < 0.025:  # under 5% of a core
                return

    def background(self, report: SizeReport) -> None:
        """Cores busy machine-wide for 1 s while this benchmark and its servers are idle:
        anything well above 0 is another workload competing for the cores."""
        self.settle()
        report.idle_cpu.append(round(busy_cores(1.0), 2))

    def config(
        self, name: str, catalog: Catalog, database: str, db: int, n: int, *, steady: bool
    ) -> Path:
        """A cachewarm config for one variant; `steady` adds the catalog's changed_query."""
        return write_config(
            self.work / f"{name}-{database}.toml",
            catalog,
            mysql_url=f"{self.db.url}/{database}",
            redis_url=f"{self.redis_url}/{db}",
            limit=n,
            steady=steady,
        )

    @property
    def runlog(self) -> Path:
        return self.work / RUNLOG


def write_config(
    path: Path, catalog: Catalog, *, mysql_url: str, redis_url: str, limit: int, steady: bool
) -> Path:
    """A cachewarm config for `catalog`, with its lock file and run log next to `path`."""
    warm: dict[str, object] = {
        "hot_query": catalog.hot_query,
        "listing_query": catalog.listing_query,
        "limit": limit,
        "ttl": TTL_S,
    }
    if steady:
        warm["changed_query"] = catalog.changed_query
    sections: dict[str, dict[str, object]] = {
        "mysql": {"url": mysql_url},
        "redis": {"url": redis_url},
        "warm": warm,
        "keys": {"prefix": PREFIX, "version": VERSION},
        # max_seconds may not exceed ttl: the hot list lives ttl from the run's start.
        "run": {
            "lockfile": str(path.parent / "cachewarm.lock"),
            "log": str(path.parent / RUNLOG),
            "max_seconds": TTL_S,
        },
    }
    lines: list[str] = []
    for section, items in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in items.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def parse_log_times(sample: Sample) -> dict[str, float]:
    """Seconds from spawn to each cachewarm JSON event (run.started, hot.selected, ...)."""
    times: dict[str, float] = {}
    for line in sample.stderr.splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
            stamp = datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        except (ValueError, KeyError):
            continue
        times[event["event"]] = stamp.timestamp() - sample.started_at
    return times


def last_runlog(path: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8").splitlines()[-1])
    return record


def cachewarm_run(lab: Lab, install: Install, config: Path, result: Result) -> dict[str, Any]:
    """One `cachewarm run`, timed into `result` with its stages; returns its run-log record."""
    argv = [install.cachewarm, "--config", str(config), "--log-format", "json", "run"]
    sample = run_child(argv)
    result.samples.append(sample)
    events = parse_log_times(sample)
    with contextlib.suppress(KeyError):
        result.stage("start-up", events["run.started"])
        result.stage("hot query", events["hot.selected"] - events["run.started"])
        result.stage("listings", events["hot.published"] - events["hot.selected"])
        result.stage("exit", sample.wall_s - events["hot.published"])
    return last_runlog(lab.runlog)


# --- the variants --------------------------------------------------------------------------


def count_hot(lab: Lab, catalog: Catalog, database: str, n: int) -> int:
    sql = f"SELECT COUNT(*) FROM ({catalog.hot_query % {'limit': n}}) t"
    return int(run_child([*lab.mariadb_cli(database), "-e", sql]).stdout.strip())


def hot_query(lab: Lab, report: SizeReport, catalog: Catalog, database: str) -> None:
    """Stage timing: the hot query alone through the C client, output discarded."""
    result = Result("hot", "hot query only (mariadb CLI)", report.hot)
    argv = [*lab.mariadb_cli(database), "-e", catalog.hot_query % {"limit": report.n}]
    run_child(argv)  # warm the buffer pool and query path once, untimed
    result.samples = [run_child(argv) for _ in range(lab.reps(report.n))]
    result.note = "stage timing, not a full warm"
    report.results.append(result)


def c_pipeline(lab: Lab, report: SizeReport, catalog: Catalog, database: str) -> None:
    """MariaDB builds every listing and its RESP SET itself; redis-cli --pipe writes them."""
    sql_file = lab.work / f"c-pipeline-{database}.sql"
    sql_file.write_text(catalog.c_pipeline_sql(report.n), encoding="utf-8")
    redis_cli = ["redis-cli", "-h", lab.rd.host, "-p", str(lab.rd.port), "-n", str(DB_C), "--pipe"]
    command = (
        f"set -o pipefail; {shlex.join(lab.mariadb_cli(database))} "
        f"< {shlex.quote(str(sql_file))} | {shlex.join(redis_cli)}"
    )
    # The statement alone, output discarded: how much of the pipeline is MariaDB
    # building the listings (the stages overlap, so this is not a breakdown).
    alone = f"{shlex.join(lab.mariadb_cli(database))} < {shlex.quote(str(sql_file))} >/dev/null"
    result = Result("c", "C pipeline (mariadb | redis-cli --pipe)", report.hot)
    for rep in range(lab.reps(report.n) + 1):  # the first run warms caches and is not counted
        lab.flush(DB_C)
        sample = run_child(["bash", "-c", command])
        if f"errors: 0, replies: {report.hot}" not in sample.stdout:
            raise RuntimeError(f"redis-cli --pipe did not confirm every SET:\n{sample.stdout}")
        if rep:
            result.samples.append(sample)
            result.stage("SQL alone", run_child(["bash", "-c", alone]).wall_s)
    result.note = f"RSS: largest of bash/mariadb/redis-cli; stages (s): {result.stage_text()}"
    report.results.append(result)
    log(f"{report.label}: C pipeline median {result.median:.2f}s")


def naive(lab: Lab, report: SizeReport, catalog: Catalog, database: str, python: str) -> None:
    result = Result("naive", "naive per-product script (Python)", report.hot)
    report.results.append(result)
    n = report.n
    if n > lab.naive_max:
        result.skipped = f"skipped above N={human(lab.naive_max)} (too slow)"
        return
    reps = 1 if n >= 100_000 else lab.reps(n)
    if reps < lab.repeat:
        result.note = f"{reps} run at this size; default install's python"
    argv = [
        python,
        str(ROOT / "bench" / "naive.py"),
        f"--mysql-url={lab.db.url}/{database}",
        f"--redis-url={lab.redis_url}/{DB_NAIVE}",
        f"--hot-query={catalog.hot_query}",
        f"--listing-query={catalog.listing_query}",
        f"--limit={n}",
        f"--prefix={PREFIX}",
        f"--ttl={TTL_S}",
    ]
    for _ in range(reps):
        lab.flush(DB_NAIVE)
        result.samples.append(run_child(argv))
    log(f"{report.label}: naive median {result.median:.2f}s")


def full_warm(
    lab: Lab, report: SizeReport, catalog: Catalog, database: str, install: Install
) -> None:
    db = DB_FULL[install.name]
    config = lab.config(f"full-{install.name}", catalog, database, db, report.n, steady=False)
    result = Result(
        f"full:{install.name}",
        f"cachewarm run, full warm from empty, {install.name} install",
        report.hot,
    )
    for _ in range(lab.reps(report.n)):
        lab.flush(db)
        record = cachewarm_run(lab, install, config, result)
        if record["mode"] != "full" or record["written"] != report.hot:
            raise RuntimeError(f"full warm: mode {record['mode']}, wrote {record['written']}")
    result.note = "stages (s): " + result.stage_text()
    report.results.append(result)
    log(f"{report.label}: cachewarm full ({install.name}) median {result.median:.2f}s")


def verify_full_warms(lab: Lab, report: SizeReport, installs: list[Install]) -> None:
    """Every variant wrote the same keys; C, the naive script and every install the same
    bytes. The first install is the reference."""
    clients = {"C": lab.rdb(DB_C)}
    if report.get("naive") is not None:
        clients["naive"] = lab.rdb(DB_NAIVE)
    for install in installs:
        clients[install.name] = lab.rdb(DB_FULL[install.name])
    keysets = {name: product_keys(c) for name, c in clients.items()}
    ref_name = installs[0].name
    reference = keysets[ref_name]
    same = all(ks == reference for ks in keysets.values())
    report.check(
        "keysets",
        same and len(reference) == report.hot,
        f"product key sets ({', '.join(keysets)}): "
        + ", ".join(f"{k} {len(v)}" for k, v in keysets.items())
        + (" keys, identical" if same else " keys, DIFFERENT"),
    )
    keys = sorted(reference)
    for other in clients:
        if other == ref_name:
            continue
        name = {"C": "c-identical", "naive": "naive-identical"}.get(other, "installs-identical")
        common = [k for k in keys if k in keysets[other]]
        differ = compare_bytes(clients[ref_name], clients[other], common)
        details = []
        if differ:
            details = field_differences(clients[ref_name], clients[other], differ, ref_name, other)
        report.check(
            name,
            not differ and bool(common),
            f"cachewarm ({ref_name}) vs {other}: {len(common) - len(differ)} of {len(common)} "
            "listings byte-identical",
            details,
        )
    for db in (DB_C, DB_NAIVE):  # done with them; keep Redis small at 1M
        lab.flush(db)


def steady(lab: Lab, report: SizeReport, catalog: Catalog, database: str, install: Install) -> None:
    """Full warm with changed_query set, 1% of the products updated, then the timed run;
    its result must equal a fresh full warm and differ from the old one in the 1%."""
    db, n, name = DB_STEADY[install.name], report.n, install.name
    config = lab.config(f"steady-{name}", catalog, database, db, n, steady=True)
    result = Result(f"steady:{name}", f"cachewarm run, steady state (1% changed), {name} install",
                    report.hot)  # fmt: skip
    untimed = Result("", "", report.hot)
    records: list[dict[str, Any]] = []
    for _ in range(lab.reps(n)):
        lab.flush(db)
        first = cachewarm_run(lab, install, config, untimed)
        if first["mode"] != "full":
            raise RuntimeError(f"first warm of the steady state ran {first['mode']}")
        run_child([*lab.mariadb_cli(database), "-e", catalog.update_1pct])
        lab.settle()
        records.append(cachewarm_run(lab, install, config, result))
    modes = sorted({r["mode"] for r in records})
    written = sorted({r["written"] for r in records})
    unchanged = sorted({r["unchanged"] for r in records})
    expected = n // 100
    report.check(
        f"steady-incremental:{name}",
        modes == ["incremental"] and written == [expected],
        f"steady state, {name} install: run log mode {'/'.join(modes)}, written "
        f"{'/'.join(map(str, written))} (expected {expected}), "
        f"unchanged {'/'.join(map(str, unchanged))}",
    )
    result.note = (
        f"mode {'/'.join(modes)}, {'/'.join(map(str, written))} written, "
        f"{'/'.join(map(str, unchanged))} unchanged; stages (s): {result.stage_text()}"
    )
    report.results.append(result)
    log(f"{report.label}: cachewarm steady ({name}) median {result.median:.2f}s")

    fresh = lab.config(f"check-{name}", catalog, database, DB_CHECK, n, steady=False)
    lab.flush(DB_CHECK)
    cachewarm_run(lab, install, fresh, untimed)
    after, rebuilt, before = lab.rdb(db), lab.rdb(DB_CHECK), lab.rdb(DB_FULL[name])
    keys = sorted(product_keys(after))
    same_keys = set(keys) == product_keys(rebuilt)
    differ = compare_bytes(after, rebuilt, keys)
    report.check(
        f"steady-equals-fresh:{name}",
        same_keys and not differ,
        f"steady state ({name}) vs fresh full warm after the update: key sets "
        f"{'identical' if same_keys else 'DIFFERENT'}, "
        f"{len(keys) - len(differ)} of {len(keys)} byte-identical",
    )
    changed = set(compare_bytes(before, after, keys))
    updated = {k for k in keys if int(k.rsplit(b":", 1)[1]) % 100 == 0}
    report.check(
        f"steady-changed-only-updated:{name}",
        changed == updated,
        f"full warm vs steady state ({name}): {len(keys) - len(changed)} byte-identical, "
        f"{len(changed)} differ; differing = updated products (id % 100 = 0): "
        f"{'yes' if changed == updated else 'NO'}",
    )
    lab.flush(DB_CHECK)


def invalidate(lab: Lab, report: SizeReport, database: str, install: Install) -> None:
    """`cachewarm invalidate -` of up to 10k hot ids, whole process, listings restored
    before each run."""
    client = lab.rdb(DB_STEADY[install.name])
    hot = json.loads(client.get(f"{PREFIX}:v{VERSION}:hot") or b"[]")
    ids = [int(i) for i in hot[:INVALIDATE_IDS]]
    keys = [f"{PREFIX}:v{VERSION}:product:{i}".encode() for i in ids]
    saved = list(values(client, keys))
    config = lab.work / f"steady-{install.name}-{database}.toml"
    result = Result(
        "invalidate", f"cachewarm invalidate of {human(len(ids))} ids, {install.name} install",
        len(ids),
    )  # fmt: skip
    stdin = "\n".join(map(str, ids)).encode()
    argv = [install.cachewarm, "--config", str(config), "invalidate", "-"]
    for _ in range(lab.reps(report.n)):
        pipe = client.pipeline(transaction=False)
        for key, value in zip(keys, saved, strict=True):
            pipe.set(key, value, px=TTL_S * 1000)
        pipe.execute()
        result.samples.append(run_child(argv, stdin=stdin))
        left = sum(client.exists(*keys[i : i + 1000]) for i in range(0, len(keys), 1000))
        if left:
            raise RuntimeError(f"invalidate left {left} of {len(keys)} listings")
    startup = [run_child([install.cachewarm, "--version"]) for _ in range(lab.reps(report.n))]
    result.note = (
        "ids/s in the rate column; whole process; bare `cachewarm --version` takes "
        f"{statistics.median(s.wall_s for s in startup):.2f}s"
    )
    report.results.append(result)
    log(f"{report.label}: invalidate median {result.median:.2f}s")


def run_size(lab: Lab, catalog: Catalog, n: int, installs: list[Install]) -> SizeReport:
    """Seed one catalog at one size and run every variant against it."""
    report = SizeReport(catalog.name, n)
    database = f"bench_{catalog.name}_{n}"
    report.seed_s = catalog.seed(lab.db.url, n, database)
    log(f"{report.label}: seeded {database} in {report.seed_s:.1f}s")
    lab.background(report)
    report.hot = count_hot(lab, catalog, database, n)
    report.check("hot-count", report.hot == n, f"hot query returns {report.hot} ids for LIMIT {n}")

    hot_query(lab, report, catalog, database)
    c_pipeline(lab, report, catalog, database)
    naive(lab, report, catalog, database, installs[0].python)
    for install in installs:
        full_warm(lab, report, catalog, database, install)
    verify_full_warms(lab, report, installs)
    for install in installs:
        steady(lab, report, catalog, database, install)
    invalidate(lab, report, database, installs[0])
    lab.rdb(0).flushall()
    lab.background(report)
    if max(report.idle_cpu) > 0.2:
        log(f"{report.label}: other processes kept {max(report.idle_cpu)} cores busy")
    return report
