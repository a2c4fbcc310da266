"""The library API: one warm, a dry run, invalidation, and the read-only views.

Each function takes resolved Settings and returns plain data, so the CLI only parses and
prints, and tests call these directly against real servers.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import secrets
import socket
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import redis.exceptions
import structlog

from . import lock, metrics, output, runlog, sink, source
from .config import Settings, redact_url, require_queries
from .errors import (
    CachewarmError,
    DeadlineExceeded,
    Interrupted,
    LockHeld,
    SinkError,
    SourceError,
)
from .keys import Keys
from .replica import reads as replica_reads
from .runlog import RunRecord

log = structlog.get_logger("cachewarm")

Progress = Callable[[int, int], None]  # (ids just done, total ids)
DRY_RUN_SAMPLES = 5


def keys_for(settings: Settings) -> Keys:
    return Keys(settings.keys.prefix, settings.keys.version)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextlib.contextmanager
def _recorded(settings: Settings, command: str) -> Iterator[RunRecord]:
    """Write exactly one run-log line for the block, whatever way it ends."""
    record = RunRecord(
        run_id=secrets.token_hex(6),
        command=command,
        started_at=_utc_now(),
        prefix=settings.keys.prefix,
        version=settings.keys.version,
        host=socket.gethostname(),
        pid=os.getpid(),
    )
    runlog.check_writable(settings.runlog)
    started = time.monotonic()
    bound = log.bind(run_id=record.run_id, command=command)
    bound.info("run.started", prefix=record.prefix, version=record.version)
    try:
        yield record
        record.stage = "done"
        if record.status == "running":
            record.status = "ok"
    except LockHeld as exc:
        record.status, record.error = "skipped", str(exc)
        raise
    except (Interrupted, KeyboardInterrupt) as exc:
        exc.args = (f"{str(exc) or 'interrupted by SIGINT'} while {record.stage}",)
        record.status, record.error = "interrupted", str(exc)
        raise
    except DeadlineExceeded as exc:
        exc.args = (f"{exc} (while {record.stage})",)
        record.status, record.error = "failed", str(exc)
        raise
    except CachewarmError as exc:
        record.status, record.error = "failed", str(exc)
        raise
    except Exception as exc:
        record.status, record.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
        raise
    finally:
        record.ended_at = _utc_now()
        record.duration_s = round(time.monotonic() - started, 3)
        record.error = record.error and output.redact(record.error, settings.secrets())
        runlog.append(settings.runlog, record)
        if command == "run" and settings.run.metrics_file:
            try:
                metrics.write(Path(settings.run.metrics_file), record)
            except OSError as exc:
                bound.warning("metrics.unwritable", path=settings.run.metrics_file, error=str(exc))
        bound.info(
            "run.finished",
            status=record.status,
            duration_s=record.duration_s,
            hot=record.hot,
            written=record.written,
            unchanged=record.unchanged,
            error=record.error,
        )


def _chunks(ids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _read_batch(
    src: source.Source,
    settings: Settings,
    batch: Sequence[int],
    record: RunRecord,
    absent: set[int],
) -> list[tuple[int, bytes]]:
    """Listings of one batch, in batch order, for the writer.

    An id without a row gets b'' (its stale listing is removed); an oversize one is left
    out. Both go into `absent`, so the hot list never names them.
    """
    found: dict[int, bytes] = {}
    limit = settings.warm.max_payload_bytes
    for product_id, payload in src.listings(settings.warm.listing_query, batch):
        found[product_id] = payload
    items: list[tuple[int, bytes]] = []
    for product_id in batch:
        payload = found.get(product_id, b"")
        if len(payload) > limit:
            record.skipped_oversize += 1
            log.warning("listing.oversize", product_id=product_id, bytes=len(payload), limit=limit)
            absent.add(product_id)
            continue
        if payload:
            record.read += 1
        else:
            absent.add(product_id)
        items.append((product_id, payload))
    return items


def _check_deadline(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise DeadlineExceeded("run passed run.max_seconds; stopped")


def _redis_call(client: redis.Redis, fn: Callable[..., Any], where: str, *args: Any) -> Any:
    try:
        return fn(client, *args)
    except redis.exceptions.RedisError as exc:
        raise SinkError(f"Redis at {where} failed: {exc}") from None


def _pipe(settings: Settings, client: redis.Redis, fence: sink.Fence) -> sink.ScriptPipe:
    return sink.ScriptPipe(
        client,
        fence,
        ttl_s=settings.warm.ttl,
        jitter=settings.warm.ttl_jitter,
        where=redact_url(settings.redis.url),
    )


def warm(settings: Settings, *, full: bool = False, progress: Progress | None = None) -> RunRecord:
    """One warm under the lock: hot ids, their listings in batches, then the hot list.

    With `warm.changed_query` set, only listings changed since the last run (or gone
    from Redis) are re-read; the rest just get their TTL refreshed. `full` forces a
    full warm, as does `warm.full_every` elapsing.
    """
    require_queries(settings)
    keys = keys_for(settings)
    where = redact_url(settings.redis.url)
    with _recorded(settings, "run") as record, contextlib.ExitStack() as stack:
        if settings.run.lock == "file":
            record.stage = f"taking the lock {settings.lockfile}"
            fence = stack.enter_context(lock.file_lock(settings.lockfile, record.run_id))
        record.stage = f"connecting to Redis at {where}"
        client = sink.connect(settings.redis)
        stack.callback(client.close)
        if settings.run.lock == "redis":
            record.stage = f"taking the Redis lock {keys.lock}"
            fence = stack.enter_context(
                lock.redis_lock(client, keys.lock, record.run_id, ttl_s=settings.run.lock_ttl)
            )
        deadline = time.monotonic() + settings.run.max_seconds
        start_ms = _redis_call(client, sink.server_time_ms, where)
        fence = replace(fence, deadline_ms=start_ms + int(settings.run.max_seconds * 1000))
        previous = _redis_call(client, sink.hot_meta, where, keys)
        record.stage = "connecting to MySQL"
        src = source.Source(settings.mysql)
        stack.callback(src.close)
        replica = stack.enter_context(replica_reads(settings.mysql, src))
        watermark = src.server_now() if settings.warm.changed_query else ""
        hot_src = replica.replica if replica else src
        record.stage = f"running the hot query on {hot_src.where}"
        ids = hot_src.hot_ids(settings.warm.hot_query, settings.warm.limit)
        record.hot, record.hot_ids = len(ids), list(ids[: runlog.HOT_IDS_LOGGED])
        log.info("hot.selected", run_id=record.run_id, hot=len(ids))
        if not ids:  # never replace a non-empty hot list with nothing: likely a bad query
            log.warning("hot.empty", run_id=record.run_id, kept=keys.hot)
            return record
        pipe = _pipe(settings, client, fence)
        stack.callback(pipe.close)
        absent: set[int] = set()
        to_read: Sequence[int] = ids
        since = None if full else _since(settings, previous)
        if since is not None:
            record.stage = f"running the changed query on {src.where}"
            changed = src.changed_ids(settings.warm.changed_query, since, len(ids))
            if changed is not None:
                record.mode = "incremental"
                record.stage = f"refreshing unchanged listings in Redis at {where}"
                to_read = _touch_unchanged(pipe, keys, ids, changed, settings.warm.batch_size)
                record.unchanged = len(ids) - len(to_read)
                # Changed but not hot now: drop the old listing, or a later incremental
                # run that finds it hot again (edit older than its watermark) would keep it.
                cold = changed.difference(i for i in ids if i in changed)
                record.removed += _redis_call(client, sink.delete_listings, where, keys, cold)
        writer = sink.BatchWriter(pipe, keys, _redis_call(client, sink.read_epoch, where, keys))
        for number, batch in enumerate(_chunks(to_read, settings.warm.batch_size), 1):
            record.stage = f"running the listing query on {src.where} (batch {number})"
            _check_deadline(deadline)
            epoch = writer.epoch
            reader = src
            if replica:  # only after the epoch is taken: see replica.py
                reader = replica.for_batch()
                record.stage = f"running the listing query on {reader.where} (batch {number})"
            items = _read_batch(reader, settings, batch, record, absent)
            if not record.read and not any(payload for _, payload in items):
                # Deleting every listing because the query matched nothing is far more
                # likely a broken listing_query than a shop whose hot products all vanished.
                raise SourceError(
                    f"listing query returned no row for any of the first {len(batch)} hot ids; "
                    "refusing to delete their listings (check [warm] listing_query)"
                )
            record.stage = f"writing batch {number} to Redis at {where}"
            writer.send(epoch, items)
            log.debug("batch.sent", run_id=record.run_id, ids=len(batch), listings=len(items))
            if progress:
                progress(len(batch), len(to_read))
        record.stage = f"writing to Redis at {where}"
        pipe.finish()
        totals = writer.totals
        record.written, record.unchanged = totals.written, record.unchanged + totals.unchanged
        record.removed, record.bytes = record.removed + totals.removed, totals.bytes
        record.skipped_invalidated = len(writer.skipped)
        absent |= writer.skipped
        record.stage = f"publishing {keys.hot}"
        meta = {"mode": record.mode, "watermark": watermark}
        meta["full_at"] = str(time.time()) if record.mode == "full" else previous["full_at"]
        _publish(settings, client, keys, fence, ids, absent, record, start_ms, meta)
    return record


def _since(settings: Settings, previous: dict[str, str]) -> str | None:
    """Where an incremental warm may start reading changes, or None for a full warm."""
    mark, full_at = previous.get("watermark"), previous.get("full_at")
    if not settings.warm.changed_query or not mark or not full_at:
        return None
    if time.time() - float(full_at) > settings.warm.full_every:
        return None
    overlap = timedelta(seconds=settings.warm.changed_overlap)
    return (datetime.fromisoformat(mark) - overlap).isoformat(sep=" ")


def _touch_unchanged(
    pipe: sink.ScriptPipe, keys: Keys, ids: Sequence[int], changed: set[int], batch: int
) -> array[int]:
    """Refresh TTLs of listings not changed since the watermark; return ids to re-read."""
    reread: array[int] = array("Q")
    for chunk in _chunks(ids, batch):
        sink.touch(pipe, keys, [i for i in chunk if i not in changed], reread.extend)
        reread.extend(i for i in chunk if i in changed)
    pipe.finish()
    return reread


def _hot_json(ids: Sequence[int], absent: set[int]) -> tuple[bytearray, int]:
    """The hot list as readers get it, and its length; built without a list of a million ints."""
    hot = bytearray(b"[")
    size = 0
    for product_id in ids:
        if product_id not in absent:
            hot += b"%d," % product_id
            size += 1
    hot[-1:] = b"]" if size else b"[]"
    return hot, size


def _publish(
    settings: Settings,
    client: redis.Redis,
    keys: Keys,
    fence: sink.Fence,
    ids: Sequence[int],
    absent: set[int],
    record: RunRecord,
    start_ms: int,
    meta: dict[str, str],
) -> None:
    """Publish only ids whose listing this run wrote or confirmed, hottest first.

    The list expires `ttl` after the run started, never later than any listing in it
    (each of those was written or refreshed after the start with at least `ttl`).
    """
    hot, size = _hot_json(ids, absent)
    sink.publish_hot(
        client,
        keys,
        fence,
        hot,
        expire_at_ms=start_ms + settings.warm.ttl * 1000,
        meta={"published_at": _utc_now(), "run_id": record.run_id, "size": str(size), **meta},
        where=redact_url(settings.redis.url),
    )
    record.hot_published = True
    log.info("hot.published", run_id=record.run_id, key=keys.hot, size=size, of=len(ids))


@dataclass
class DryRunReport:
    """What a warm would change, computed from reads only."""

    record: RunRecord
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    would_remove: int = 0
    bytes: int = 0
    hot_changed: bool = False
    samples: list[tuple[str, str, int]] = field(default_factory=list)  # (state, key, bytes)


def dry_run(settings: Settings, *, progress: Progress | None = None) -> DryRunReport:
    """Everything a warm reads, compared with Redis; no lock, no write, no expiry touched."""
    require_queries(settings)
    keys = keys_for(settings)
    where = redact_url(settings.redis.url)
    with _recorded(settings, "dry-run") as record, contextlib.ExitStack() as stack:
        record.status = "dry-run"
        report = DryRunReport(record)
        client = sink.connect(settings.redis)
        stack.callback(client.close)
        src = source.Source(settings.mysql)
        stack.callback(src.close)
        ids = src.hot_ids(settings.warm.hot_query, settings.warm.limit)
        record.hot, record.hot_ids = len(ids), list(ids[: runlog.HOT_IDS_LOGGED])
        absent: set[int] = set()
        for batch in _chunks(ids, settings.warm.batch_size):
            items = _read_batch(src, settings, batch, record, absent)
            current = _redis_call(client, sink.current_values, where, keys, [i for i, _ in items])
            for (product_id, payload), old in zip(items, current, strict=True):
                _tally(report, keys.product(product_id), payload, old)
            if progress:
                progress(len(batch), len(ids))
        old_hot = _redis_call(client, lambda c: c.get(keys.hot), where)
        report.hot_changed = bool(ids) and old_hot != _hot_json(ids, absent)[0]
        record.written, record.unchanged, record.bytes = (
            report.new + report.changed,
            report.unchanged,
            report.bytes,
        )
    return report


def _tally(report: DryRunReport, key: str, payload: bytes, old: bytes | None) -> None:
    if not payload:
        state = "remove" if old is not None else ""
        report.would_remove += old is not None
    elif old is None:
        state, report.new = "new", report.new + 1
    elif old != payload:
        state, report.changed = "changed", report.changed + 1
    else:
        state, report.unchanged = "", report.unchanged + 1
    report.bytes += len(payload)
    if state and len(report.samples) < DRY_RUN_SAMPLES:
        report.samples.append((state, key, len(payload)))


@dataclass
class InvalidateResult:
    record: RunRecord
    deleted: int = 0
    rewarmed: int = 0
    missing: list[int] = field(default_factory=list)  # rewarm found no listing row


def invalidate(settings: Settings, ids: Sequence[int], *, rewarm: bool = False) -> InvalidateResult:
    """Drop these listings now, and fence out any warm that read them before this call.

    With rewarm, read them fresh from MySQL afterwards and write them; a later
    invalidation still wins over this rewrite.
    """
    if rewarm:
        require_queries(settings)
    keys = keys_for(settings)
    where = redact_url(settings.redis.url)
    with _recorded(settings, "invalidate") as record, contextlib.ExitStack() as stack:
        result = InvalidateResult(record)
        record.hot, record.hot_ids = len(ids), list(ids[: runlog.HOT_IDS_LOGGED])
        client = sink.connect(settings.redis)
        stack.callback(client.close)
        epoch, result.deleted = sink.invalidate(
            client,
            keys,
            ids,
            tombstone_s=settings.run.max_seconds,
            batch=settings.warm.batch_size,
            where=where,
        )
        record.removed = result.deleted
        log.info("invalidate.done", run_id=record.run_id, ids=len(ids), deleted=result.deleted)
        if rewarm:
            src = source.Source(settings.mysql)
            stack.callback(src.close)
            result.rewarmed, result.missing = refill(settings, client, src, ids, epoch, record)
    return result


def refill(
    settings: Settings,
    client: redis.Redis,
    src: source.Source,
    ids: Sequence[int],
    epoch: int,
    record: RunRecord,
) -> tuple[int, list[int]]:
    """Read listings invalidated at `epoch` fresh from MySQL and write them.

    Written through the warm's guard with `epoch` as the read epoch: an invalidation
    after this one still wins. Returns (listings written or confirmed, ids with no row).
    """
    keys = keys_for(settings)
    now_ms = _redis_call(client, sink.server_time_ms, redact_url(settings.redis.url))
    fence = sink.Fence(
        lock_key=keys.lock, deadline_ms=now_ms + int(settings.run.max_seconds * 1000)
    )
    pipe = _pipe(settings, client, fence)
    try:
        writer = sink.BatchWriter(pipe, keys, epoch)
        absent: set[int] = set()
        for batch in _chunks(ids, settings.warm.batch_size):
            items = _read_batch(src, settings, batch, record, absent)
            writer.send(epoch, [(i, p) for i, p in items if p])
        pipe.finish()
    finally:
        pipe.close()
    rewarmed = writer.totals.written + writer.totals.unchanged
    record.written, record.bytes = record.written + rewarmed, record.bytes + writer.totals.bytes
    record.skipped_invalidated += len(writer.skipped)
    return rewarmed, [i for i in ids if i in absent]


def show(settings: Settings, product_id: int) -> bytes | None:
    """The listing exactly as readers GET it, or None when not cached."""
    keys = keys_for(settings)
    client = sink.connect(settings.redis)
    try:
        value = _redis_call(
            client, lambda c: c.get(keys.product(product_id)), redact_url(settings.redis.url)
        )
    finally:
        client.close()
    return value if isinstance(value, bytes) else None


def status(settings: Settings, *, runs: int = 5) -> dict[str, Any]:
    """Recent runs, the lock holder and the published hot list.

    Redis trouble is reported in the result, not raised: status must work when Redis is down.
    """
    keys = keys_for(settings)
    report: dict[str, Any] = {
        "prefix": settings.keys.prefix,
        "version": settings.keys.version,
        "runlog": str(settings.runlog),
        "runs": runlog.tail(settings.runlog, runs),
        "lock": None,
        "hot": None,
        "redis_error": None,
    }
    if settings.run.lock == "file":
        report["lock"] = lock.file_lock_holder(settings.lockfile)
    try:
        client = sink.connect(settings.redis)
    except SinkError as exc:
        report["redis_error"] = str(exc)
        return report
    try:
        if settings.run.lock == "redis":
            report["lock"] = lock.redis_lock_holder(client, keys.lock)
        meta = sink.hot_meta(client, keys)
        ttl_ms = client.pttl(keys.hot)
        if meta and ttl_ms != -2:
            published = calendar.timegm(time.strptime(meta["published_at"], "%Y-%m-%dT%H:%M:%SZ"))
            report["hot"] = {
                "key": keys.hot,
                "size": int(meta.get("size", 0)),
                "published_at": meta["published_at"],
                "age_s": round(time.time() - published, 1),
                "run_id": meta.get("run_id"),
                "expires_in_s": round(ttl_ms / 1000, 1) if ttl_ms >= 0 else None,
            }
    except redis.exceptions.RedisError as exc:
        report["redis_error"] = f"Redis at {redact_url(settings.redis.url)} failed: {exc}"
    finally:
        client.close()
    return report
