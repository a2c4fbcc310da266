"""`cachewarm check`: will this config work from cron? Every answer without writing anything.

An operator runs it after editing the config and before trusting cron. Each check gives
one Finding (ok, warn or fail) that says what was found and, when it matters, what it
means. It reads only: MySQL sees SELECT, SHOW and EXPLAIN; Redis sees PING, INFO and
GET; files are judged with os.access and never created, so `check` as the cron user
answers for the cron user, and running it cannot disturb a shop or a live cache.

A failed connection ends the checks that need it; everything else still runs, so one
invocation lists every problem it can see.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.exceptions

from . import parts
from .binlog import server
from .config import Settings, load_settings, require_queries
from .errors import BinlogUnfit, ConfigError, SinkError, SourceError
from .mysql.encode import IdList, InvalidJSON
from .mysql.source import Source
from .pipeline import Rejections
from .store.connect import connect
from .urls import redact_url, scrub

OK, WARN, FAIL = "ok", "warn", "fail"
# Hot ids whose listings are read: enough for the contract, a size estimate and the
# blast-radius limit (one legitimately oversize listing among them is 1%, under 5%).
SAMPLE_IDS = 100
LARGE_ESTIMATE = 100_000  # rows a temporary table or filesort may cover before we warn
KEY_OVERHEAD = 100  # bytes Redis spends per listing besides the value: key, entry, expiry
DENIED = re.compile(r"\[(1142|1143|1044)\]$")  # table, column, database access denied
NEEDED_PRIVILEGES = {"SELECT", "USAGE"}  # USAGE is "no privilege"
FOLLOW_PRIVILEGES = {spelling for names in server.GRANTS.values() for spelling in names}


@dataclass(frozen=True)
class Finding:
    """One line of the answer: which check, how it came out, and what was found."""

    check: str
    status: str  # OK, WARN or FAIL
    message: str


@dataclass
class CheckReport:
    findings: list[Finding] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(f.status == FAIL for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": not self.failed, "findings": [asdict(f) for f in self.findings]}


def check(config: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> CheckReport:
    """Load the config (file, env, as `run` would) and check everything a run needs."""
    report = CheckReport()
    try:
        settings = load_settings(config, env=env)
        require_queries(settings)
    except ConfigError as exc:
        report.findings.append(Finding("config", FAIL, str(exc)))
        return report
    report.findings.append(Finding("config", OK, f"loaded {settings.source}"))
    report.findings.append(Finding("parts", OK, parts.describe(settings.mysql.driver)))
    report.findings += [Finding("config", WARN, note) for note in settings.notes]
    sample: list[bytes] = []
    report.findings += _mysql(settings, sample)
    report.findings += _follow(settings)
    report.findings += _redis(settings, sample)
    report.findings += _files(settings)
    secrets = settings.secrets()
    report.findings = [
        Finding(f.check, f.status, scrub(" ".join(f.message.split()), secrets))
        for f in report.findings
    ]
    return report


# --- MySQL ----------------------------------------------------------------------------------


def _mysql(settings: Settings, sample: list[bytes]) -> Iterator[Finding]:
    """Connection, the two queries' contracts, the grants they need, the hot query's plan.

    Appends the sample listings it read to `sample`, for the Redis memory estimate.
    """
    try:
        src = Source(settings.mysql)
    except SourceError as exc:
        yield Finding("mysql", FAIL, str(exc))
        return
    with contextlib.closing(src):
        try:
            yield _server(src)
            denied: list[str] = []
            ids: list[int] = []
            yield from _hot_query(settings, src, ids, denied)
            yield from _listing_query(settings, src, ids, sample, denied)
            yield _grants(src, denied, follows=_follows(settings))
            if not denied:
                yield _explain(settings, src)
        except SourceError as exc:  # the connection broke between checks
            yield Finding("mysql", FAIL, str(exc))


def _server(src: Source) -> Finding:
    _, rows = src.rows("server check", "SELECT VERSION(), CURRENT_USER()", {})
    version, user = rows[0]
    _, cipher = src.rows("TLS check", "SHOW SESSION STATUS LIKE 'Ssl_cipher'", {})
    tls = f"TLS {cipher[0][1]}" if cipher and cipher[0][1] else "no TLS"
    return Finding("mysql", OK, f"connected to {src.where}: {version}, {tls}, account {user}")


def _hot_query(
    settings: Settings, src: Source, ids: list[int], denied: list[str]
) -> Iterator[Finding]:
    try:
        ids += src.hot_ids(settings.warm.hot_query, SAMPLE_IDS, max_id=settings.keys.max_hot_id)
    except SourceError as exc:
        if DENIED.search(str(exc)):
            denied.append(str(exc))
        else:
            yield Finding("hot_query", FAIL, str(exc))
        return
    if not ids:
        yield Finding(
            "hot_query",
            WARN,
            "returned no ids: a run would keep the previous hot list (check its WHERE clause)",
        )
    else:
        shown = ", ".join(map(str, ids[:5]))
        yield Finding("hot_query", OK, f"returns integer ids, hottest first: {shown}, ...")


def _listing_query(
    settings: Settings, src: Source, ids: list[int], sample: list[bytes], denied: list[str]
) -> Iterator[Finding]:
    """The contract on the sampled hot ids: an `id` first, unique names, and listings
    the run's own checks accept, judged by the run's blast-radius limit."""
    query, json_columns = settings.warm.listing_query, settings.warm.json_columns
    try:
        columns, _ = src.rows("listing query", query, {"ids": IdList(())})
        found = list(src.listings(query, ids, json_columns=json_columns))
    except SourceError as exc:
        if DENIED.search(str(exc)):
            denied.append(str(exc))
        else:
            yield Finding("listing_query", FAIL, str(exc))
        return
    if columns[0] != "id":
        yield Finding(
            "listing_query",
            WARN,
            f"first column is `{columns[0]}`, not `id`: it works, but readers of the "
            "listing JSON usually expect the id first",
        )
    rejected = Rejections()
    for product_id, payload in found:
        if not rejected.add(product_id, payload, settings.warm.max_payload_bytes):
            assert not isinstance(payload, InvalidJSON)  # for mypy: add() took those
            sample.append(payload)
    if rejected:
        share = settings.warm.max_rejected_share
        too_many = len(rejected) > int(share * len(ids))
        yield Finding(
            "listing_query",
            FAIL if too_many else WARN,
            f"{len(rejected)} of {len(ids)} sampled hot listings rejected: "
            + (
                f"more than [warm] max_rejected_share ({share:g}), a run would fail and keep them"
                if too_many
                else "a run removes them"
            )
            + f" ({rejected.summary()})",
        )
    names = ", ".join(columns)
    if ids and not found:
        yield Finding(
            "listing_query",
            FAIL,
            f"no row for any of the {len(ids)} sampled hot ids: a run would refuse to "
            "delete their listings (does it select from the right table?)",
        )
    else:
        rows = f"{len(found)} of {len(ids)} sampled hot ids have a row" if ids else "runs"
        yield Finding("listing_query", OK, f"{rows}; columns: {names}")


def _grants(src: Source, denied: list[str], *, follows: bool) -> Finding:
    """SELECT is all a warm needs; `follow` (when `[follow]` is set) also needs the
    replication grants, which are then no excess (the follow finding checks them)."""
    if denied:
        return Finding("grants", FAIL, "; ".join(denied))
    _, rows = src.rows("SHOW GRANTS", "SHOW GRANTS FOR CURRENT_USER()", {})
    needed = NEEDED_PRIVILEGES | (FOLLOW_PRIVILEGES if follows else set())
    extra = sorted(set().union(*(_privileges(str(row[0])) for row in rows)) - needed)
    what = "SELECT and the replication grants" if follows else "SELECT only"
    if extra:
        return Finding(
            "grants",
            WARN,
            f"the queries run; the user also has {', '.join(extra)}, which cachewarm never "
            f"needs: {what} on the tables the queries read is enough",
        )
    return Finding("grants", OK, f"the queries run with {what}, all cachewarm needs")


def _follows(settings: Settings) -> bool:
    return bool(settings.follow.tables or settings.follow.queries)


def _follow(settings: Settings) -> Iterator[Finding]:
    """With `[follow]` set: what `follow` checks at start, so cron's check covers it too."""
    if not _follows(settings):
        return
    try:
        ctl = server.Control(settings)
        try:
            server.check_preconditions(
                ctl, settings, settings.follow.tables, settings.follow.queries
            )
        finally:
            ctl.close()
    except (BinlogUnfit, SourceError) as exc:
        yield Finding("follow", FAIL, str(exc))
        return
    yield Finding(
        "follow",
        OK,
        "binlog ROW with FULL row images and metadata, the replication grants and the "
        "[follow] tables are what follow needs",
    )


def _privileges(grant: str) -> set[str]:
    """'GRANT SELECT, INSERT (a) ON `shop`.* TO ...' -> {'SELECT', 'INSERT'}; roles: none."""
    match = re.match(r"GRANT (.+?) ON ", grant)
    if not match or grant.startswith("GRANT PROXY "):
        return set()
    return {re.sub(r"\s*\(.*\)", "", p).strip() for p in match[1].split(",")}


def _explain(settings: Settings, src: Source) -> Finding:
    """A GROUP BY that spills its temporary table to disk made the hot query 4x slower."""
    names, rows = src.rows(
        "EXPLAIN of the hot query",
        "EXPLAIN " + settings.warm.hot_query,
        {"limit": settings.warm.limit},
    )
    plan = [dict(zip(names, row, strict=True)) for row in rows]
    estimate = max((int(str(step.get("rows") or 0)) for step in plan), default=0)
    extras = sorted(
        {
            what
            for step in plan
            for what in ("Using temporary", "Using filesort")
            if what in str(step.get("Extra") or "")
        }
    )
    if extras and estimate >= LARGE_ESTIMATE:
        _, sizes = src.rows(
            "temporary table limits", "SELECT @@tmp_table_size, @@max_heap_table_size", {}
        )
        in_memory = min(int(sizes[0][0]), int(sizes[0][1])) // 2**20
        return Finding(
            "hot_query_plan",
            WARN,
            f"EXPLAIN shows {' and '.join(extras)} over ~{estimate} rows: past "
            f"{in_memory} MiB (min of tmp_table_size, max_heap_table_size) the GROUP BY "
            "spills to disk and runs several times slower; see docs/performance.md",
        )
    detail = " and ".join(extras) if extras else "no temporary table or filesort"
    return Finding("hot_query_plan", OK, f"EXPLAIN: ~{estimate} rows, {detail}")


# --- Redis ----------------------------------------------------------------------------------

POLICY_MEANS = {
    "noeviction": "when full, writes fail: a run fails (exit 1) without publishing, and "
    "nothing already cached is evicted",
    "allkeys": "when full, Redis evicts any key, listings and the hot list included: "
    "readers must treat a miss as a cache miss, and the hot list may vanish until the next run",
    "volatile": "when full, Redis evicts keys with a TTL: every cachewarm key has one, so "
    "listings and the hot list go before keys without one; readers treat a miss as a cache miss",
}


def _redis(settings: Settings, sample: list[bytes]) -> Iterator[Finding]:
    where = redact_url(settings.redis.url)
    try:
        client = connect(settings.redis)
    except SinkError as exc:
        yield Finding("redis", FAIL, str(exc))
        return
    try:
        server = client.info("server")
        memory = client.info("memory")
    except redis.exceptions.RedisError as exc:
        yield Finding("redis", FAIL, f"Redis at {where} failed: {exc}")
        return
    finally:
        client.close()
    tls = "TLS" if settings.redis.url.startswith("rediss://") else "no TLS"
    yield Finding("redis", OK, f"connected to {where}: Redis {server['redis_version']}, {tls}")
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    maxmemory, used = int(memory.get("maxmemory", 0)), int(memory.get("used_memory", 0))
    meaning = POLICY_MEANS.get(policy.split("-")[0], "see the Redis documentation")
    if not maxmemory:
        meaning = "no maxmemory is set, so it never applies: memory grows with the hot set"
    yield Finding("redis_memory_policy", OK, f"maxmemory-policy {policy}: {meaning}")
    yield _headroom(settings, sample, maxmemory, used)


def _headroom(settings: Settings, sample: list[bytes], maxmemory: int, used: int) -> Finding:
    if not sample:
        return Finding("redis_memory", OK, "no sample listing to estimate the hot set from")
    per_listing = sum(map(len, sample)) / len(sample) + KEY_OVERHEAD
    need = int(settings.warm.limit * per_listing)
    estimate = (
        f"~{_mib(need)} for {settings.warm.limit} listings of ~{per_listing:.0f} bytes "
        f"(from {len(sample)} sampled)"
    )
    if not maxmemory:
        return Finding("redis_memory", OK, f"hot set {estimate}; Redis uses {_mib(used)}")
    free = maxmemory - used
    if need > free:
        return Finding(
            "redis_memory",
            WARN,
            f"hot set {estimate}, but only {_mib(free)} of maxmemory {_mib(maxmemory)} is "
            "free (listings already cached count as used)",
        )
    return Finding(
        "redis_memory", OK, f"hot set {estimate}; {_mib(free)} of {_mib(maxmemory)} free"
    )


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


# --- files ----------------------------------------------------------------------------------


def _files(settings: Settings) -> Iterator[Finding]:
    user = getpass.getuser()
    if settings.run.lock == "file":
        yield _writable("lockfile", settings.lockfile, user)
    else:
        yield Finding("lockfile", OK, f"none: the lock is the Redis key {settings.keys.lock}")
    yield _writable("run_log", settings.runlog, user)
    if settings.run.metrics_file:
        yield _writable("metrics_file", Path(settings.run.metrics_file), user)
    if settings.audit.textfile:
        yield _writable("audit_textfile", Path(settings.audit.textfile), user)


def _writable(check_name: str, path: Path, user: str) -> Finding:
    """Could `user` (this process) create or write `path`? Judged without touching it."""
    if path.is_symlink():
        return Finding(check_name, FAIL, f"{path} is a symlink; cachewarm refuses to use it")
    if path.exists():
        if path.is_dir():
            return Finding(check_name, FAIL, f"{path} is a directory")
        if not os.access(path, os.W_OK):
            return Finding(check_name, FAIL, f"{path} is not writable by {user}")
        return Finding(check_name, OK, f"{path} is writable by {user}")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return Finding(check_name, FAIL, f"cannot create {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return Finding(
            check_name, FAIL, f"cannot create {path}: {ancestor} is not writable by {user}"
        )
    return Finding(check_name, OK, f"{path} can be created by {user}")
