"""Read-only views for people and scripts: one cached listing, and the state of runs.

Nothing here writes, and `status` works with Redis down: an operator asks for it
exactly when something is wrong.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import asdict, dataclass
from typing import Any

from . import lock, runlog
from .binlog.checkpoint import follower_status
from .config import Settings
from .errors import SinkError
from .misses import queue_length
from .store.connect import connect, describe, failing_as
from .store.reads import hot_meta, hot_ttl_ms, listing
from .urls import scrub


def show(settings: Settings, product_id: int) -> bytes | None:
    """The listing exactly as readers GET it, or None when not cached."""
    client = connect(settings.redis)
    try:
        return listing(client, settings.keys, product_id, where=describe(settings.redis))
    finally:
        client.close()


@dataclass
class HotList:
    """The published hot list as `status` sees it."""

    key: str
    size: int
    published_at: str
    age_s: float
    run_id: str | None
    expires_in_s: float | None


@dataclass
class StatusReport:
    """Recent runs, the lock holder, the published hot list and the miss queue; `to_dict`
    for --json."""

    prefix: str
    version: int
    runlog: str
    runs: list[dict[str, Any]]
    lock: dict[str, Any] | None = None
    lock_known: bool = True  # False: the Redis lock could not be read (Redis down)
    lock_overdue_s: float | None = None  # the holder is past its deadline: see lock.overdue_s
    hot: HotList | None = None
    redis_error: str | None = None
    follower: dict[str, Any] | None = None  # checkpoint.follower_status: None if never followed
    miss_queue: int | None = None  # entries readers reported and no run took yet; None: unknown

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def status(settings: Settings, *, runs: int = 5) -> StatusReport:
    """Recent runs, the lock holder and the published hot list.

    Redis trouble is reported in the result, not raised: status must work when Redis is down.
    """
    keys = settings.keys
    secrets = settings.secrets()
    # The log is in the order runs ended; shown in the order they started, as each line
    # begins with its start (a long run that ended last would otherwise sit out of place).
    records = sorted(runlog.tail(settings.runlog, runs), key=lambda r: str(r.get("started_at")))
    for record in records:  # written by any version, with any password of its day
        if isinstance(record.get("error"), str):
            record["error"] = scrub(record["error"], secrets)
    report = StatusReport(
        prefix=keys.prefix,
        version=keys.version,
        runlog=str(settings.runlog),
        runs=records,
        lock_known=settings.run.lock == "file",
        follower=follower_status(settings),
    )
    if settings.run.lock == "file":
        report.lock = lock.file_lock_holder(settings.lockfile)
        report.lock_overdue_s = lock.overdue_s(report.lock)
    try:
        client = connect(settings.redis)
    except SinkError as exc:
        report.redis_error = scrub(str(exc), secrets)
        return report
    where = describe(settings.redis)
    try:
        if settings.run.lock == "redis":
            with failing_as(where):
                report.lock = lock.redis_lock_holder(client, keys.lock)
            report.lock_known = True
            if report.lock:
                with failing_as(where):
                    now_ms = lock.redis_lock_clock_ms(client, keys.lock)
                report.lock_overdue_s = lock.overdue_s(report.lock, redis_now_ms=now_ms)
        report.miss_queue = queue_length(client, keys, where=where)
        meta = hot_meta(client, keys, where=where)
        ttl_ms = hot_ttl_ms(client, keys, where=where)
        if meta and ttl_ms != -2:
            published = calendar.timegm(time.strptime(meta["published_at"], "%Y-%m-%dT%H:%M:%SZ"))
            report.hot = HotList(
                key=keys.hot,
                size=int(meta.get("size", 0)),
                published_at=meta["published_at"],
                age_s=round(time.time() - published, 1),
                run_id=meta.get("run_id"),
                expires_in_s=round(ttl_ms / 1000, 1) if ttl_ms >= 0 else None,
            )
    except SinkError as exc:
        report.redis_error = scrub(str(exc), secrets)
    finally:
        client.close()
    return report
