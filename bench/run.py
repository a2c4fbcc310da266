"""Benchmark cachewarm against a pure C pipeline and a naive per-product script.

One command builds (or reuses) two throwaway installs of the working tree under
bench/work/ ("default": `pip install .`, "fast": `pip install '.[fast]'`), starts
throwaway MariaDB and Redis servers, seeds the sample shop at each size, times every
variant, checks that they all wrote the same listings, and writes a Markdown table to
bench/results/:

    .venv/bin/python bench/run.py --sizes 10000,100000 --repeat 3

See bench/README.md for what each variant is and how to read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import decimal
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "examples"), str(ROOT / "scripts")]

import seed as shop  # noqa: E402  (examples/seed.py)
import servers  # noqa: E402  (scripts/servers.py)

PREFIX = "bench"
VERSION = 1
TTL_S = 900
KEY_PATTERN = f"{PREFIX}:v{VERSION}:product:*"
INVALIDATE_IDS = 10_000
TIME = "/usr/bin/time"  # GNU time, for peak RSS
WORK = ROOT / "bench" / "work"  # gitignored: the installs under test

# The sample shop's ranking (units sold in the last day), extended with the products
# that sold nothing so that LIMIT N makes every product hot; examples/seed.py's own
# HOT_QUERY only returns the ~half of the products with a sale in the last day.
HOT_QUERY_ALL = (
    "SELECT p.id FROM products p LEFT JOIN (SELECT product_id, SUM(qty) AS q FROM order_lines "
    "WHERE ordered_at >= NOW() - INTERVAL 1 DAY GROUP BY product_id) s ON s.product_id = p.id "
    "ORDER BY COALESCE(s.q, 0) DESC, p.id LIMIT %(limit)s"
)
CHANGED_QUERY = "SELECT id FROM products WHERE updated_at >= %(since)s"
UPDATE_1PCT = "UPDATE products SET price = price + 1 WHERE id % 100 = 0"

# Redis logical databases, one per variant, so their keys can be compared afterwards.
DB_C, DB_NAIVE, DB_CHECK = 1, 2, 3
DB_FULL = {"default": 4, "fast": 5}
DB_STEADY = {"default": 6, "fast": 7}

# The C pipeline: MariaDB builds each SET command in RESP itself; the client prints one
# row per line and appends the '\n' that ends the last '\r'. Columns as in LISTING_QUERY;
# TO_BASE64 wraps at 76 characters, hence the REPLACE.
C_PIPELINE_SQL = """\
SELECT CONCAT('*5\\r\\n$3\\r\\nSET\\r\\n$', LENGTH(t.k), '\\r\\n', t.k,
              '\\r\\n$', LENGTH(t.v), '\\r\\n', t.v,
              '\\r\\n$2\\r\\nPX\\r\\n${ttl_len}\\r\\n{ttl_ms}\\r')
FROM (
  SELECT CONCAT('{prefix}:v{version}:product:', p.id) AS k,
         JSON_OBJECT('id', p.id, 'sku', p.sku, 'name', p.name, 'description', p.description,
                     'price', p.price, 'weight_kg', p.weight_kg, 'released_on', p.released_on,
                     'updated_at', p.updated_at,
                     'thumbnail', REPLACE(TO_BASE64(p.thumbnail), '\\n', ''),
                     'category', c.name, 'category_slug', c.slug) AS v
  FROM ({hot}) h
  JOIN products p ON p.id = h.id
  JOIN categories c ON c.id = p.category_id
) t;
"""


def human(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the installs under test ---------------------------------------------------------------

# What `pip install` needs from the working tree; copied so builds never touch it.
SNAPSHOT = ("pyproject.toml", "README.md", "LICENSE", "cachewarm")
EXTRAS = {"default": "", "fast": "[fast]"}
DISTS = ("cachewarm", "click", "PyMySQL", "redis", "structlog", "mysqlclient", "orjson", "hiredis")
OPTIONAL_MODULES = {"mysqlclient": "MySQLdb", "orjson": "orjson", "hiredis": "hiredis"}

# Run inside an install (python -I): what it imports and which fast paths cachewarm takes.
PROBE = """
import hashlib, importlib.metadata as md, importlib.util, json, pathlib, sys
import cachewarm, cachewarm.encode as enc, cachewarm.source as src, redis.utils

def tree_hash(pkg):
    h = hashlib.sha256()
    for p in sorted(pkg.rglob("*.py")):
        h.update(p.relative_to(pkg).as_posix().encode() + b"\\0" + p.read_bytes() + b"\\0")
    return h.hexdigest()

def version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None

pkg = pathlib.Path(cachewarm.__file__).parent
print(json.dumps({
    "python": sys.version.split()[0],
    "package_dir": str(pkg),
    "source_sha256": tree_hash(pkg),
    "versions": {d: version(d) for d in DISTS},
    "importable": {d: importlib.util.find_spec(m) is not None for d, m in MODULES.items()},
    "driver_auto": src.driver_name("auto"),
    "json": "stdlib json" if enc.fast_dumps is enc.stdlib_dumps else "orjson",
    "redis_parser": "hiredis" if redis.utils.HIREDIS_AVAILABLE else "pure Python",
}))
"""


def tree_hash(pkg: Path) -> str:
    """The same digest as PROBE's, of the working tree's package."""
    digest = hashlib.sha256()
    for path in sorted(pkg.rglob("*.py")):
        digest.update(path.relative_to(pkg).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@dataclass
class Install:
    name: str  # "default" or "fast"
    venv: Path
    info: dict[str, Any]
    reused: bool

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def cachewarm(self) -> str:
        return str(self.venv / "bin" / "cachewarm")

    def describe(self) -> str:
        versions: dict[str, str | None] = self.info["versions"]
        have = ", ".join(f"{d} {v}" for d, v in versions.items() if v)
        missing = [d for d, v in versions.items() if not v]
        text = f"`{self.name}` install (`pip install '.{EXTRAS[self.name]}'`, "
        text += os.path.relpath(self.venv, ROOT)
        text += ", reused" if self.reused else ", built this run"
        text += f"): {have}"
        if missing:
            text += f"; not installed (imports checked): {', '.join(missing)}"
        return (
            text + f"; cachewarm picks driver {self.info['driver_auto']}, "
            f"{self.info['json']}, redis-py parser {self.info['redis_parser']}"
        )


def _pip(venv: Path, *args: str) -> None:
    argv = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=WORK)
    if proc.returncode != 0:
        output = proc.stdout[-2000:] + proc.stderr[-3000:]
        raise RuntimeError(f"{shlex.join(argv)} failed:\n{output}")


def snapshot_source(src: Path) -> Path:
    """A copy of what the package is built from, as it is in the working tree now.

    Outside the repository: builds leave nothing in the tree, and no second copy of the
    package sits where ruff or mypy look.
    """
    src.mkdir(parents=True, exist_ok=True)
    for name in SNAPSHOT:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy2(path, src / name)
    return src


def ensure_install(name: str, src: Path, *, rebuild: bool = False) -> Install:
    """The virtualenv for one install, keyed by pyproject.toml's hash, with this tree's code.

    The dependencies are installed once per pyproject.toml; the cachewarm package itself
    is reinstalled from `src` on every call, so the working tree is what gets measured.
    """
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    venv = WORK / f"venv-{name}-{key}"
    ready = venv / ".ready"
    reused = ready.exists() and not rebuild
    if not reused:
        for stale in WORK.glob(f"venv-{name}-*"):
            shutil.rmtree(stale)
        log(f"building the {name} install in {os.path.relpath(venv, ROOT)}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        _pip(venv, "install", "--quiet", "setuptools>=68", "wheel")
        _pip(venv, "install", "--quiet", f"{src}{EXTRAS[name]}")
        ready.write_text(f"pip install '.{EXTRAS[name]}'\n", encoding="utf-8")
    # Build the package from this run's copy of the working tree, deps untouched.
    _pip(
        venv,
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--force-reinstall",
        str(src),
    )
    probe = f"DISTS = {DISTS!r}\nMODULES = {OPTIONAL_MODULES!r}\n{PROBE}"
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=WORK,
        env=CHILD_ENV,
    ).stdout
    info: dict[str, Any] = json.loads(out)
    install = Install(name, venv, info, reused)
    _check_install(install)
    return install


def _check_install(install: Install) -> None:
    info = install.info
    problems = []
    if not Path(info["package_dir"]).is_relative_to(install.venv):
        problems.append(f"cachewarm imported from {info['package_dir']}, not from the install")
    if info["source_sha256"] != tree_hash(ROOT / "cachewarm"):
        problems.append("installed cachewarm differs from the working tree's cachewarm/")
    extras_present = {d for d, ok in info["importable"].items() if ok}
    if install.name == "default":
        if extras_present:
            problems.append(f"default install can import {', '.join(sorted(extras_present))}")
        expected = ("pymysql", "stdlib json", "pure Python")
    else:
        if extras_present != set(OPTIONAL_MODULES):
            problems.append(f"fast install lacks {set(OPTIONAL_MODULES) - extras_present}")
        expected = ("mysqlclient", "orjson", "hiredis")
    actual = (info["driver_auto"], info["json"], info["redis_parser"])
    if actual != expected:
        problems.append(f"{install.name} install uses {actual}, expected {expected}")
    if problems:
        raise RuntimeError(f"{install.name} install is not what it should be: {problems}")


# --- child processes ---------------------------------------------------------------------


@dataclass
class Sample:
    wall_s: float
    maxrss_kb: int
    started_at: float  # time.time() just before the spawn, to align log timestamps
    stdout: str
    stderr: str


CHILD_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def run_child(argv: Sequence[str], *, stdin: bytes | None = None, cwd: Path = ROOT) -> Sample:
    """Run one process under /usr/bin/time for its peak RSS (for a shell pipeline, the
    largest of its stages).

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
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {proc.returncode}:\n{sample.stderr[-3000:]}")
    return sample


# --- results -------------------------------------------------------------------------------


@dataclass
class Result:
    key: str  # "hot", "c", "naive", "full:default", "steady:fast", "invalidate", ...
    variant: str
    n: int
    items: int  # listings (or ids) handled per run, for the rate
    samples: list[Sample] = field(default_factory=list)
    note: str = ""
    skipped: str = ""  # reason, when the variant did not run at this size
    stages: dict[str, list[float]] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(s.wall_s for s in self.samples)

    @property
    def rss_mb(self) -> float:
        return max(s.maxrss_kb for s in self.samples) / 1024

    def stage(self, name: str, seconds: float) -> None:
        self.stages.setdefault(name, []).append(seconds)

    def stage_text(self) -> str:
        return ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in self.stages.items())


@dataclass
class SizeReport:
    n: int
    seed_s: float = 0.0
    hot: int = 0
    idle_cpu: list[float] = field(default_factory=list)  # cores busy while the bench idled
    results: list[Result] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def get(self, key: str) -> Result | None:
        return next((r for r in self.results if r.key == key and r.samples), None)

    def check(self, ok: bool, text: str) -> None:
        if ok:
            self.checks.append(text)
        else:
            self.checks.append(f"**FAILED**: {text}")
            self.failures.append(f"N={human(self.n)}: {text}")
            log(f"CHECK FAILED at N={human(self.n)}: {text}")


# --- helpers -------------------------------------------------------------------------------


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


def busy_cores(seconds: float) -> float:
    """Average number of busy CPUs machine-wide over `seconds` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    cores = os.cpu_count() or 1
    return cores * (busy1 - busy0) / max(1, total1 - total0)


def last_runlog(path: Path) -> dict[str, Any]:
    lines = path.read_text(encoding="utf-8").splitlines()
    record: dict[str, Any] = json.loads(lines[-1])
    return record


def flushdb(url: str, db: int) -> redis.Redis:
    client = redis.Redis.from_url(url, db=db)
    client.flushdb()
    return client


def product_keys(client: redis.Redis) -> set[bytes]:
    return set(client.scan_iter(match=KEY_PATTERN, count=10_000))


def values(client: redis.Redis, keys: Sequence[bytes], chunk: int = 5000) -> Iterator[bytes]:
    for start in range(0, len(keys), chunk):
        for value in client.mget(keys[start : start + chunk]):
            assert isinstance(value, bytes)
            yield value


def cachewarm_config(
    path: Path,
    work: Path,
    mysql_url: str,
    redis_url: str,
    limit: int,
    *,
    changed_query: str | None = None,
) -> Path:
    warm: dict[str, object] = {
        "hot_query": HOT_QUERY_ALL,
        "listing_query": shop.LISTING_QUERY,
        "limit": limit,
        "ttl": TTL_S,
    }
    if changed_query:
        warm["changed_query"] = changed_query
    toml: dict[str, dict[str, object]] = {
        "mysql": {"url": mysql_url},
        "redis": {"url": redis_url},
        "warm": warm,
        "keys": {"prefix": PREFIX, "version": VERSION},
        "run": {
            "lockfile": str(work / "cachewarm.lock"),
            "log": str(work / "cachewarm.runs.jsonl"),
            "max_seconds": 3600,
        },
    }
    lines: list[str] = []
    for section, items in toml.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in items.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- correctness ---------------------------------------------------------------------------

_DATETIME = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?$")


def _normal(value: object) -> object:
    """A value with format-only differences taken out (number vs string, ' ' vs 'T')."""
    if isinstance(value, str) and _DATETIME.match(value):
        date, clock = value[:10], value[11:]
        whole, _, fraction = clock.partition(".")
        return f"{date}T{whole}.{fraction.ljust(6, '0')}"
    if isinstance(value, str):
        with contextlib.suppress(decimal.InvalidOperation):
            return float(decimal.Decimal(value))
    if isinstance(value, decimal.Decimal | int) and not isinstance(value, bool):
        return float(value)
    return value


def _describe(value: object) -> str:
    if isinstance(value, decimal.Decimal):
        return str(value)
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def compare_json(
    a: redis.Redis, b: redis.Redis, keys: Sequence[bytes], a_name: str, b_name: str
) -> tuple[bool, list[str]]:
    """Field-by-field comparison of two variants' listings as parsed JSON."""
    fmt: dict[str, list[Any]] = {}
    real: dict[str, list[Any]] = {}
    identical = 0
    for va, vb in zip(values(a, keys), values(b, keys), strict=True):
        if va == vb:
            identical += 1
            continue
        ja = json.loads(va, parse_float=decimal.Decimal)
        jb = json.loads(vb, parse_float=decimal.Decimal)
        if list(ja) != list(jb):
            real.setdefault("(key order or set)", [0, list(ja), list(jb)])[0] += 1
        for name in ja:
            x, y = ja.get(name), jb.get(name)
            if x == y and type(x) is type(y):
                continue
            bucket = fmt if _normal(x) == _normal(y) else real
            bucket.setdefault(name, [0, x, y])[0] += 1
    lines = [
        f"{a_name} vs {b_name}: {len(keys)} listings, {identical} byte-identical; "
        + ("values equal as parsed JSON in all others" if not real else "VALUE DIFFERENCES")
    ]
    for label, bucket in (("format only", fmt), ("value", real)):
        for name, (count, x, y) in sorted(bucket.items()):
            lines.append(
                f"  - `{name}`: {count} listings differ ({label}), e.g. "
                f"{a_name} `{_describe(x)}` vs {b_name} `{_describe(y)}`"
            )
    return not real, lines


def compare_bytes(a: redis.Redis, b: redis.Redis, keys: Sequence[bytes]) -> tuple[int, list[bytes]]:
    differ = [
        k for k, va, vb in zip(keys, values(a, keys), values(b, keys), strict=True) if va != vb
    ]
    return len(keys) - len(differ), differ


# --- the benchmark -------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, installs: dict[str, Install]) -> None:
        self.args = args
        self.work = work
        self.installs = installs
        self.repeat: int = args.repeat
        self.db: servers.Server | None = None
        self.rd: servers.Server | None = None
        self.reports: list[SizeReport] = []

    @property
    def mysql_url(self) -> str:
        assert self.db is not None
        return self.db.url

    @property
    def redis_url(self) -> str:
        assert self.rd is not None
        return self.rd.url.rsplit("/", 1)[0]

    def rdb(self, db: int) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, db=db)

    def start(self) -> None:
        self.db = servers.start_mariadb(self.work / "mariadb")
        self.rd = servers.start_redis(self.work / "redis")

    def stop(self) -> None:
        for server in (self.db, self.rd):
            if server is not None:
                server.stop()

    def versions(self) -> dict[str, str]:
        conn = shop.connect(self.mysql_url, server_only=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT VERSION()")
                row = cur.fetchone()
        finally:
            conn.close()
        info = redis.Redis.from_url(self.redis_url).info("server")
        return {"mariadb": str(row[0]) if row else "?", "redis": str(info["redis_version"])}

    def settle(self, limit_s: float = 60.0) -> None:
        """Wait until mariadbd is idle: after a bulk load or an UPDATE InnoDB purges in the
        background, which would steal one of two cores from whatever runs next."""
        assert self.db is not None and self.db.pid is not None
        stat = Path(f"/proc/{self.db.pid}/stat")
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            before = cpu()
            time.sleep(0.5)
            if cpu() - before < 0.025:  # under 5% of a core
                return

    def background(self, report: SizeReport) -> None:
        """Cores busy machine-wide for 1 s while this benchmark and its servers are idle:
        anything well above 0 is another workload competing for the 2 cores."""
        self.settle()
        report.idle_cpu.append(round(busy_cores(1.0), 2))

    def reps(self, n: int) -> int:
        return self.args.large_repeat if n >= 1_000_000 and self.args.large_repeat else self.repeat

    # one size

    def run_size(self, n: int) -> SizeReport:
        report = SizeReport(n)
        self.reports.append(report)
        database = f"bench_{n}"
        t0 = time.perf_counter()
        shop.seed(self.mysql_url, n, database=database)
        report.seed_s = time.perf_counter() - t0
        log(f"N={human(n)}: seeded {database} in {report.seed_s:.1f}s")
        self.background(report)
        db_url = f"{self.mysql_url}/{database}"
        report.hot = self.count_hot(database, n)
        report.check(report.hot == n, f"hot query returns {report.hot} ids for LIMIT {n}")

        self.bench_hot_query(report, database, n)
        self.bench_c(report, database, n)
        self.bench_naive(report, db_url, n)
        for install in self.installs.values():
            self.bench_cachewarm_full(report, install, db_url, n)
        self.verify_same(report)
        for install in self.installs.values():
            self.bench_steady(report, install, db_url, database, n)
        self.bench_invalidate(report, self.installs["default"], n)
        redis.Redis.from_url(self.redis_url).flushall()
        self.background(report)
        if max(report.idle_cpu) > 0.2:
            log(f"N={human(n)}: other processes kept {max(report.idle_cpu)} cores busy")
        return report

    def mariadb_cli(self, database: str) -> list[str]:
        assert self.db is not None
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

    def count_hot(self, database: str, n: int) -> int:
        sql = f"SELECT COUNT(*) FROM ({HOT_QUERY_ALL % {'limit': n}}) t"
        out = run_child([*self.mariadb_cli(database), "-e", sql]).stdout
        return int(out.strip())

    def bench_hot_query(self, report: SizeReport, database: str, n: int) -> None:
        """Stage timing: the hot query alone through the C client, output discarded."""
        result = Result("hot", "hot query only (mariadb CLI)", n, report.hot)
        argv = [*self.mariadb_cli(database), "-e", HOT_QUERY_ALL % {"limit": n}]
        run_child(argv)  # warm the buffer pool and query path once, untimed
        result.samples = [run_child(argv) for _ in range(self.reps(n))]
        result.note = "stage timing, not a full warm"
        report.results.append(result)

    def bench_c(self, report: SizeReport, database: str, n: int) -> None:
        assert self.rd is not None
        ttl_ms = str(TTL_S * 1000)
        sql = C_PIPELINE_SQL.format(
            ttl_len=len(ttl_ms),
            ttl_ms=ttl_ms,
            prefix=PREFIX,
            version=VERSION,
            hot=HOT_QUERY_ALL.replace("SELECT p.id", "SELECT p.id AS id", 1) % {"limit": n},
        )
        sql_file = self.work / f"c-pipeline-{n}.sql"
        sql_file.write_text(sql, encoding="utf-8")
        redis_cli = shlex.join(
            ["redis-cli", "-h", self.rd.host, "-p", str(self.rd.port), "-n", str(DB_C), "--pipe"]
        )
        command = (
            f"set -o pipefail; {shlex.join(self.mariadb_cli(database))} "
            f"< {shlex.quote(str(sql_file))} | {redis_cli}"
        )
        result = Result("c", "C pipeline (mariadb | redis-cli --pipe)", n, report.hot)
        for rep in range(self.reps(n) + 1):  # the first run warms caches and is not counted
            flushdb(self.redis_url, DB_C)
            sample = run_child(["bash", "-c", command])
            if f"errors: 0, replies: {report.hot}" not in sample.stdout:
                raise RuntimeError(f"redis-cli --pipe did not confirm every SET:\n{sample.stdout}")
            if rep:
                result.samples.append(sample)
        result.note = "RSS: largest of bash/mariadb/redis-cli"
        report.results.append(result)
        log(f"N={human(n)}: C pipeline median {result.median:.2f}s")

    def bench_naive(self, report: SizeReport, db_url: str, n: int) -> None:
        result = Result("naive", "naive per-product script (Python)", n, report.hot)
        report.results.append(result)
        if n > self.args.naive_max:
            result.skipped = f"skipped above N={human(self.args.naive_max)} (too slow)"
            return
        reps = 1 if n >= 100_000 else self.reps(n)
        if reps < self.repeat:
            result.note = f"{reps} run at this size; default install's python"
        argv = [
            self.installs["default"].python,
            str(ROOT / "bench" / "naive.py"),
            "--mysql-url",
            db_url,
            "--redis-url",
            f"{self.redis_url}/{DB_NAIVE}",
            "--hot-query",
            HOT_QUERY_ALL,
            "--listing-query",
            shop.LISTING_QUERY,
            "--limit",
            str(n),
            "--prefix",
            PREFIX,
            "--ttl",
            str(TTL_S),
        ]
        for _ in range(reps):
            flushdb(self.redis_url, DB_NAIVE)
            result.samples.append(run_child(argv))
        log(f"N={human(n)}: naive median {result.median:.2f}s")

    def cachewarm_run(self, install: Install, config: Path, result: Result) -> dict[str, Any]:
        """One `cachewarm run`, timed into `result`; returns its run-log record."""
        argv = [install.cachewarm, "--config", str(config), "--log-format", "json", "run"]
        sample = run_child(argv)
        result.samples.append(sample)
        events = parse_log_times(sample)
        with contextlib.suppress(KeyError):
            result.stage("start-up", events["run.started"])
            result.stage("hot query", events["hot.selected"] - events["run.started"])
            result.stage("listings", events["hot.published"] - events["hot.selected"])
            result.stage("exit", sample.wall_s - events["hot.published"])
        return last_runlog(self.work / "cachewarm.runs.jsonl")

    def bench_cachewarm_full(
        self, report: SizeReport, install: Install, db_url: str, n: int
    ) -> None:
        db = DB_FULL[install.name]
        config = cachewarm_config(
            self.work / f"full-{install.name}-{n}.toml",
            self.work,
            db_url,
            f"{self.redis_url}/{db}",
            n,
        )
        result = Result(
            f"full:{install.name}",
            f"cachewarm run, full warm from empty, {install.name} install",
            n,
            report.hot,
        )
        for _ in range(self.reps(n)):
            flushdb(self.redis_url, db)
            record = self.cachewarm_run(install, config, result)
            if record["mode"] != "full" or record["written"] != report.hot:
                raise RuntimeError(f"full warm: mode {record['mode']}, wrote {record['written']}")
        result.note = "stages (s): " + result.stage_text()
        report.results.append(result)
        log(f"N={human(n)}: cachewarm full ({install.name}) median {result.median:.2f}s")

    def verify_same(self, report: SizeReport) -> None:
        clients = {"C": self.rdb(DB_C)}
        if report.get("naive") is not None:
            clients["naive"] = self.rdb(DB_NAIVE)
        for name, db in DB_FULL.items():
            clients[name] = self.rdb(db)
        keysets = {name: product_keys(c) for name, c in clients.items()}
        reference = keysets["default"]
        report.check(
            all(ks == reference for ks in keysets.values()) and len(reference) == report.hot,
            f"product key sets ({', '.join(keysets)}): "
            + ", ".join(f"{k} {len(v)}" for k, v in keysets.items())
            + (" keys, identical" if all(ks == reference for ks in keysets.values()) else ""),
        )
        keys = sorted(reference & keysets["fast"])
        equal, differ = compare_bytes(clients["default"], clients["fast"], keys)
        report.check(
            not differ,
            f"default vs fast install: {equal} of {len(keys)} listings byte-identical"
            + (f"; NOT IDENTICAL, first different key: {differ[0]!r}" if differ else ""),
        )
        if "naive" in clients:
            keys = sorted(reference & keysets["naive"])
            equal, differ = compare_bytes(clients["default"], clients["naive"], keys)
            report.check(
                not differ,
                f"cachewarm (default) vs naive: {equal} of {len(keys)} listings byte-identical"
                + (f"; first different: {differ[0]!r}" if differ else ""),
            )
        keys = sorted(reference & keysets["C"])
        ok, lines = compare_json(clients["default"], clients["C"], keys, "cachewarm", "C")
        report.check(ok, lines[0])
        report.checks += lines[1:]
        for db in (DB_C, DB_NAIVE):  # done with them; keep Redis small at 1M
            flushdb(self.redis_url, db)

    def update_1pct(self, database: str) -> None:
        run_child([*self.mariadb_cli(database), "-e", UPDATE_1PCT])
        self.settle()

    def bench_steady(
        self, report: SizeReport, install: Install, db_url: str, database: str, n: int
    ) -> None:
        """Full warm with changed_query set, 1% of products updated, then the timed run."""
        db = DB_STEADY[install.name]
        config = cachewarm_config(
            self.work / f"steady-{install.name}-{n}.toml",
            self.work,
            db_url,
            f"{self.redis_url}/{db}",
            n,
            changed_query=CHANGED_QUERY,
        )
        result = Result(
            f"steady:{install.name}",
            f"cachewarm run, steady state (1% changed), {install.name} install",
            n,
            report.hot,
        )
        records: list[dict[str, Any]] = []
        untimed = Result("", "", n, report.hot)
        for _ in range(self.reps(n)):
            flushdb(self.redis_url, db)
            first = self.cachewarm_run(install, config, untimed)
            if first["mode"] != "full":
                raise RuntimeError(f"first warm of the steady state ran {first['mode']}")
            self.update_1pct(database)
            records.append(self.cachewarm_run(install, config, result))
        modes = sorted({r["mode"] for r in records})
        written = sorted({r["written"] for r in records})
        unchanged = sorted({r["unchanged"] for r in records})
        expected = len([i for i in range(1, n + 1) if i % 100 == 0])
        report.check(
            modes == ["incremental"] and written == [expected],
            f"steady state, {install.name} install: run log mode {'/'.join(modes)}, "
            f"written {'/'.join(map(str, written))} (expected {expected}), "
            f"unchanged {'/'.join(map(str, unchanged))}",
        )
        result.note = (
            f"mode {'/'.join(modes)}, {'/'.join(map(str, written))} written, "
            f"{'/'.join(map(str, unchanged))} unchanged; stages (s): {result.stage_text()}"
        )
        report.results.append(result)
        log(f"N={human(n)}: cachewarm steady ({install.name}) median {result.median:.2f}s")

        # The steady-state result must equal a fresh full warm of the same data, byte for
        # byte, and differ from the pre-update full warm exactly in the updated products.
        check = cachewarm_config(
            self.work / f"check-{n}.toml", self.work, db_url, f"{self.redis_url}/{DB_CHECK}", n
        )
        flushdb(self.redis_url, DB_CHECK)
        self.cachewarm_run(install, check, untimed)
        steady, fresh, before = self.rdb(db), self.rdb(DB_CHECK), self.rdb(DB_FULL[install.name])
        keys = sorted(product_keys(steady))
        same_keys = set(keys) == product_keys(fresh)
        equal, differ = compare_bytes(steady, fresh, keys)
        report.check(
            same_keys and not differ,
            f"steady state ({install.name}) vs fresh full warm after the update: key sets "
            f"{'identical' if same_keys else 'DIFFERENT'}, {equal} of {len(keys)} byte-identical",
        )
        _, changed = compare_bytes(before, steady, keys)
        updated = {k for k in keys if int(k.rsplit(b":", 1)[1]) % 100 == 0}
        report.check(
            set(changed) == updated,
            f"full warm vs steady state ({install.name}): {len(keys) - len(changed)} "
            f"byte-identical, {len(changed)} differ; differing = updated products "
            f"(id % 100 = 0): {'yes' if set(changed) == updated else 'NO'}",
        )
        flushdb(self.redis_url, DB_CHECK)

    def bench_invalidate(self, report: SizeReport, install: Install, n: int) -> None:
        client = self.rdb(DB_STEADY[install.name])
        hot = json.loads(client.get(f"{PREFIX}:v{VERSION}:hot") or b"[]")
        ids = [int(i) for i in hot[:INVALIDATE_IDS]]
        keys = [f"{PREFIX}:v{VERSION}:product:{i}" for i in ids]
        saved = list(values(client, [k.encode() for k in keys]))
        config = self.work / f"steady-{install.name}-{n}.toml"
        result = Result(
            "invalidate",
            f"cachewarm invalidate of {human(len(ids))} ids, {install.name} install",
            n,
            len(ids),
        )
        stdin = "\n".join(map(str, ids)).encode()
        argv = [install.cachewarm, "--config", str(config), "invalidate", "-"]
        for _ in range(self.reps(n)):
            pipe = client.pipeline(transaction=False)
            for key, value in zip(keys, saved, strict=True):
                pipe.set(key, value, px=TTL_S * 1000)
            pipe.execute()
            result.samples.append(run_child(argv, stdin=stdin))
            left = sum(client.exists(*keys[i : i + 1000]) for i in range(0, len(keys), 1000))
            if left:
                raise RuntimeError(f"invalidate left {left} of {len(keys)} listings")
        startup = [run_child([install.cachewarm, "--version"]) for _ in range(self.reps(n))]
        result.note = (
            "ids/s in the rate column; whole process; bare `cachewarm --version` takes "
            f"{statistics.median(s.wall_s for s in startup):.2f}s"
        )
        report.results.append(result)
        log(f"N={human(n)}: invalidate median {result.median:.2f}s")


# --- output --------------------------------------------------------------------------------


def table(reports: Sequence[SizeReport]) -> str:
    head = (
        "| variant | N | runs | median wall s | listings/s | peak RSS MB | ratio to C | notes |\n"
        "|---|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows: list[str] = []
    for report in reports:
        c = report.get("c")
        for r in report.results:
            if r.skipped or not r.samples:
                rows.append(f"| {r.variant} | {human(r.n)} | 0 | - | - | - | - | {r.skipped} |")
                continue
            ratio = f"{r.median / c.median:.2f}x" if c else "-"
            rows.append(
                f"| {r.variant} | {human(r.n)} | {len(r.samples)} | {r.median:.3f} | "
                f"{r.items / r.median:,.0f} | {r.rss_mb:.1f} | {ratio} | {r.note} |"
            )
    return head + "\n".join(rows) + "\n"


@dataclass
class Target:
    what: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run


def targets(reports: Sequence[SizeReport]) -> list[Target]:
    """The README's targets, judged from this run's numbers."""
    by_n = {r.n: r for r in reports}
    out: list[Target] = []

    def ratio(n: int, key: str) -> float | None:
        report = by_n.get(n)
        if report is None:
            return None
        r, c = report.get(key), report.get("c")
        return r.median / c.median if r and c else None

    def fastest(n: int) -> tuple[float, str] | None:
        found = [(x, name) for name in ("default", "fast") if (x := ratio(n, f"full:{name}"))]
        return min(found) if found else None

    for n, limit in ((100_000, 1.25), (1_000_000, 1.5)):
        best = fastest(n)
        out.append(
            Target(
                f"full warm {human(n)}, fastest install, vs C",
                f"<= {limit}x",
                f"{best[0]:.2f}x ({best[1]})" if best else "not run",
                best[0] <= limit if best else None,
            )
        )
    x = ratio(100_000, "full:default")
    out.append(
        Target(
            "full warm 100k, default install, vs C",
            "<= 1.6x",
            f"{x:.2f}x" if x else "not run",
            x <= 1.6 if x else None,
        )
    )
    at_100k = by_n.get(100_000)
    naive = at_100k.get("naive") if at_100k else None
    full = at_100k.get("full:default") if at_100k else None
    speedup = naive.median / full.median if naive and full else None
    out.append(
        Target(
            "naive / cachewarm, 100k, default install (wall time)",
            ">= 10",
            f"{speedup:.1f}" if speedup else "not run",
            speedup >= 10 if speedup else None,
        )
    )
    for name in ("default", "fast"):
        x = ratio(100_000, f"steady:{name}")
        out.append(
            Target(
                f"steady state 1% changed, 100k, {name} install, vs C",
                "<= 0.8x",
                f"{x:.2f}x" if x else "not run",
                x <= 0.8 if x else None,
            )
        )
    for name in ("default", "fast"):
        small, large = by_n.get(10_000), by_n.get(1_000_000)
        rs = small.get(f"full:{name}") if small else None
        rl = large.get(f"full:{name}") if large else None
        if rs and rl:
            grow = rl.rss_mb - rs.rss_mb
            measured = f"{rl.rss_mb:.1f} - {rs.rss_mb:.1f} = {grow:.1f} MB"
        out.append(
            Target(
                f"peak RSS of a full warm, 1M minus 10k, {name} install",
                "< 30 MB",
                measured if rs and rl else "needs 10k and 1M in one run",
                grow < 30 if rs and rl else None,
            )
        )
    for report in reports:
        inv = report.get("invalidate")
        if inv:
            out.append(
                Target(
                    f"invalidate 10k ids (whole process), default install, at {human(report.n)}",
                    "< 1.5 s",
                    f"{inv.median:.2f} s",
                    inv.median < 1.5,
                )
            )
    return out


def targets_table(reports: Sequence[SizeReport]) -> str:
    rows = ["| target | goal | this run | met |", "|---|---|---|---|"]
    for t in targets(reports):
        met = "n/a" if t.met is None else ("met" if t.met else "**not met**")
        rows.append(f"| {t.what} | {t.goal} | {t.measured} | {met} |")
    return "\n".join(rows) + "\n"


def machine(versions: dict[str, str], installs: dict[str, Install]) -> list[str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    python = installs["default"].info["python"]
    return [
        f"- CPU: {os.cpu_count()} cores, {cpu}; memory {mem_gb:.0f} GiB",
        f"- OS: {platform.platform()}",
        f"- MariaDB {versions['mariadb']} (throwaway, scripts/servers.py settings); "
        f"Redis {versions['redis']}",
        f"- Python {python} in both installs",
        *(f"- {install.describe()}" for install in installs.values()),
    ]


def cachewarm_source() -> str:
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (
        f"the working tree {ROOT} (git {rev or '?'}), built into both installs; "
        f"sha256 of cachewarm/*.py {tree_hash(ROOT / 'cachewarm')[:16]}, checked in each install"
    )


def write_results(
    bench: Bench,
    versions: dict[str, str],
    command: str,
    total_s: float,
    out_dir: Path,
) -> Path:
    sizes = "_".join(human(r.n) for r in bench.reports)
    path = out_dir / f"{datetime.date.today().isoformat()}-{sizes}.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = f"`--repeat {bench.repeat}`"
    if bench.args.large_repeat:
        runs += f" (`--large-repeat {bench.args.large_repeat}` at N >= 1M)"
    failures = [f for r in bench.reports for f in r.failures]
    lines = [
        f"# cachewarm benchmark, {datetime.date.today().isoformat()}",
        "",
        f"Command: `{command}`",
        "",
        f"Total runtime: {total_s / 60:.1f} min (including installs, seeding and checks).",
        "",
        "## Machine",
        "",
        *machine(versions, bench.installs),
        f"- cachewarm under test: {cachewarm_source()}",
        "",
        "## Results",
        "",
        f"Medians of {runs} runs unless noted; full warms start from empty Redis; every "
        "product is hot (hot query LIMIT = N). Peak RSS is the client process's (servers "
        "excluded), the largest over the runs. Ratios are to the C pipeline at the same N.",
        "",
        table(bench.reports),
        "## Targets",
        "",
        targets_table(bench.reports),
        "## Checks",
        "",
        "All checks passed." if not failures else f"**{len(failures)} CHECK(S) FAILED.**",
        "",
    ]
    quiet = all(max(r.idle_cpu, default=0) <= 0.2 for r in bench.reports)
    lines[lines.index("## Results") + 1 : lines.index("## Results") + 1] = [
        "",
        "Background load (cores busy machine-wide while the benchmark idled, before and "
        "after each size): "
        + "; ".join(
            f"{human(r.n)}: {', '.join(f'{x:.2f}' for x in r.idle_cpu)}" for r in bench.reports
        )
        + (
            ". Quiet machine."
            if quiet
            else ". **Another workload shared the machine: timings are inflated and noisy.**"
        ),
    ]
    for report in bench.reports:
        lines.append(f"N={human(report.n)} (seeded in {report.seed_s:.1f}s, {report.hot} hot ids):")
        lines += [c if c.startswith("  ") else f"- {c}" for c in report.checks]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def parse_sizes(text: str) -> list[int]:
    sizes = []
    for part in text.split(","):
        part = part.strip().lower().replace("_", "")
        scale = 1_000_000 if part.endswith("m") else 1000 if part.endswith("k") else 1
        sizes.append(int(float(part.rstrip("mk")) * scale))
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,100000", help="e.g. 10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per variant (median)")
    parser.add_argument(
        "--large-repeat", type=int, default=0, help="timed runs at N >= 1M (default: --repeat)"
    )
    parser.add_argument(
        "--naive-max", type=int, default=100_000, help="skip the naive script above this N"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--workdir", type=Path, help="server data dir (default: a temp dir)")
    parser.add_argument(
        "--rebuild", action="store_true", help="rebuild the installs under bench/work/"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.large_repeat < 0:
        parser.error("--repeat must be at least 1")
    sizes = parse_sizes(args.sizes)
    for tool in ("mariadb", "redis-cli", "bash", TIME):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed")

    command = shlex.join([os.path.relpath(sys.executable, ROOT), "bench/run.py", *sys.argv[1:]])
    started = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cwbench-src-") as tmp:
        src = snapshot_source(Path(tmp) / "cachewarm-src")
        installs = {name: ensure_install(name, src, rebuild=args.rebuild) for name in EXTRAS}
    for install in installs.values():
        log(install.describe())
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cwbench-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, work.resolve(), installs)
    try:
        bench.start()
        versions = bench.versions()
        for n in sizes:
            bench.run_size(n)
    finally:
        bench.stop()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    path = write_results(bench, versions, command, total, args.out)
    print(table(bench.reports))
    print(targets_table(bench.reports))
    failures = [f for r in bench.reports for f in r.failures]
    for report in bench.reports:
        print(f"N={human(report.n)}:")
        for check in report.checks:
            print(check if check.startswith("  ") else f"- {check}")
    print(f"\ntotal {total / 60:.1f} min; written to {os.path.relpath(path, ROOT)}")
    if failures:
        print(f"\n{len(failures)} CHECK(S) FAILED:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
