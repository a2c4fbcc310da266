"""One command's work, start to end: a warm, a dry run, an invalidation.

Each function takes resolved Settings, records itself in the run log, and returns plain
data, so the CLI only parses and prints, and tests call these directly against real
servers. The listing reads of all three go through pipeline.Reader; what differs is the
target: store.writer.BatchWriter for a warm and a refill, DryRunReport for a dry run.
"""

from __future__ import annotations

import builtins
import contextlib
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import structlog

from . import lock, metrics, misses, runlog
from .config import Settings, require_queries
from .keys import Keys
from .mysql.replica import reads as replica_reads
from .mysql.source import Source
from .pipeline import Evidence, Items, Progress, chunks, reader_for, refill, writer_for
from .runlog import RunRecord
from .store.connect import Client, check_master, connect, describe, master_address
from .store.pipe import ScriptPipe
from .store.reads import current_values, hot_list, hot_meta, server_time_ms
from .store.slots import learn_states
from .store.writer import BatchWriter, delete_listings, publish_hot
from .store.writer import invalidate as store_invalidate

log = structlog.get_logger("cachewarm")

DRY_RUN_SAMPLES = 5


def _recording(settings: Settings, command: str) -> contextlib.AbstractContextManager[RunRecord]:
    hooks = (
        [metrics.hook(Path(settings.run.metrics_file))]
        if command == "run" and settings.run.metrics_file
        else []
    )
    return runlog.recording(
        settings.runlog, command, settings.keys, secrets_=settings.secrets(), hooks=hooks
    )


def warm(settings: Settings, *, full: bool = False, progress: Progress | None = None) -> RunRecord:
    """One warm under the lock: hot ids, their listings in batches, then the hot list.

    First it fills the misses readers reported (cachewarm.misses), at most
    `warm.miss_per_run` of them. With `warm.changed_query` set, only listings changed
    since the last run (or gone from Redis) are re-read; the rest just get their TTL
    refreshed. `full` forces a full warm, as does `warm.full_every` elapsing. Use it
    inside `run_guard` to bound calls blocked in a driver too.
    """
    require_queries(settings)
    keys = settings.keys
    where = describe(settings.redis)
    with _recording(settings, "run") as record, contextlib.ExitStack() as stack:

        def at(stage: str) -> None:
            record.stage = stage

        def connected() -> contextlib.closing[Client]:
            at(f"connecting to {where}")
            return contextlib.closing(connect(settings.redis))

        client, fence = stack.enter_context(
            lock.run_lock(settings, record.run_id, connected, stage=at)
        )
        deadline = time.monotonic() + settings.run.max_seconds
        master = master_address(client, where=where)
        start_ms = server_time_ms(client, where=where)
        fence = replace(fence, deadline_ms=start_ms + int(settings.run.max_seconds * 1000))
        previous = hot_meta(client, keys, where=where)
        record.stage = "connecting to MySQL"
        src = stack.enter_context(contextlib.closing(Source(settings.mysql, deadline=deadline)))
        replica = stack.enter_context(replica_reads(settings.mysql, src))
        if settings.warm.miss_queue:
            misses.drain_run(
                settings, client, src, record, fence=fence, deadline=deadline, replica=replica
            )
        watermark = src.server_now() if settings.warm.changed_query else ""
        ids = _hot_ids(settings, replica.replica if replica else src, record)
        if not ids:
            return record
        pipe = ScriptPipe(client, where=where, lock_key=fence.lock_key)
        stack.callback(pipe.close)
        record.stage = f"learning the guard's slot states from {where}"
        writer = writer_for(settings, pipe, fence, learn_states(pipe, keys, ids))
        to_read: Sequence[int] = ids
        changed = _changed_ids(
            settings, src, record, previous, full=full, hot=len(ids), now_ms=start_ms
        )
        if changed is not None:
            record.stage = f"refreshing unchanged listings in {where}"
            to_read = _touch_unchanged(pipe, writer, ids, changed, settings.warm.batch_size)
            record.unchanged = len(ids) - len(to_read)
            # Changed but not hot now: drop the old listing, or a later incremental
            # run that finds it hot again (edit older than its watermark) would keep it.
            cold = _cold(ids, changed)
            record.removed += delete_listings(client, keys, cold, where=where)
        reader = reader_for(settings, src, record, deadline, replica, hot=len(ids))
        reader.run(
            to_read,
            writer,
            evidence=cached_evidence(client, keys, where, changed),
            progress=progress,
            where=where,
        )
        record.stage = f"writing to {where}"
        pipe.finish()
        totals = writer.totals
        record.written, record.unchanged = totals.written, record.unchanged + totals.unchanged
        record.removed, record.bytes = record.removed + totals.removed, totals.bytes
        record.skipped_invalidated += len(writer.skipped)  # after the misses' (misses.drain_run)
        record.stage = f"publishing {keys.hot}"
        check_master(client, master, where)
        meta = {"mode": record.mode, "watermark": watermark}
        # On Redis' clock, as _since compares it: a stepped local clock cannot skew it.
        full_at = f"{start_ms / 1000:.3f}"
        meta["full_at"] = full_at if record.mode == "full" else previous["full_at"]
        hot, size = hot_json(ids, reader.absent | writer.skipped)
        publish_hot(
            pipe,
            keys,
            fence,
            hot,
            expire_at_ms=start_ms + settings.warm.ttl * 1000,
            meta={"published_at": runlog.utc_now(), "run_id": record.run_id, "size": str(size)}
            | meta,
        )
        record.hot_published = True
        log.info("hot.published", run_id=record.run_id, key=keys.hot, size=size, of=len(ids))
    return record


def _hot_ids(settings: Settings, src: Source, record: RunRecord) -> Sequence[int]:
    """Run the hot query; an empty answer marks the run "empty" and warns.

    An empty hot set is not a success: the kept hot list expires while nothing renews
    it, so the run log says "empty" and the last-success metric stays where it was.
    """
    record.stage = f"running the hot query on {src.where}"
    ids = src.hot_ids(settings.warm.hot_query, settings.warm.limit, max_id=settings.keys.max_hot_id)
    record.hot, record.hot_ids = len(ids), list(ids[: runlog.HOT_IDS_LOGGED])
    log.info("hot.selected", run_id=record.run_id, hot=len(ids))
    if not ids:  # never replace a non-empty hot list with nothing: likely a bad query
        if record.command == "run":
            record.status = "empty"
        log.warning("hot.empty", run_id=record.run_id, kept=settings.keys.hot)
    return ids


def _changed_ids(
    settings: Settings,
    src: Source,
    record: RunRecord,
    previous: dict[str, str],
    *,
    full: bool,
    hot: int,
    now_ms: int,
) -> set[int] | None:
    """Ids changed since the last run's watermark, or None for a full warm.

    `now_ms`: Redis' clock now, the clock the last full warm's time was stored on.
    """
    since = None if full else _since(settings, previous, now_ms)
    if since is None:
        return None
    record.stage = f"running the changed query on {src.where}"
    changed = src.changed_ids(settings.warm.changed_query, since, hot)
    if changed is not None:
        record.mode = "incremental"
    return changed


def _cold(ids: Sequence[int], changed: set[int]) -> set[int]:
    """Changed ids that are not hot now; built without a set of every hot id."""
    return changed.difference(i for i in ids if i in changed)


def cached_evidence(client: Client, keys: Keys, where: str, changed: set[int] | None) -> Evidence:
    """The broken-query guard's evidence: ids with a listing cached now, not reported changed.

    A changed id may have lost its row for good reason (deleted, hidden by the listing
    query's WHERE); an unchanged one that is still cached had a row at the last run.
    """

    def cached(batch: Sequence[int]) -> int:
        suspects = [i for i in batch if not changed or i not in changed]
        values = current_values(client, keys, suspects, where=where)
        return sum(value is not None for value in values)

    return cached


def _since(settings: Settings, previous: dict[str, str], now_ms: int) -> str | None:
    """Where an incremental warm may start reading changes, or None for a full warm.

    Both ends are server clocks: the watermark is MySQL's NOW() (what changed_query
    compares), the last full warm's time Redis' TIME. A last full warm that seems to lie
    in the future (stored by an older version from a clock that ran ahead) is due now.
    """
    mark, full_at = previous.get("watermark"), previous.get("full_at")
    if not settings.warm.changed_query or not mark or not full_at:
        return None
    age_s = now_ms / 1000 - float(full_at)
    if not 0 <= age_s <= settings.warm.full_every:
        return None
    overlap = timedelta(seconds=settings.warm.changed_overlap)
    return (datetime.fromisoformat(mark) - overlap).isoformat(sep=" ")


def _to_reread(
    client: Client, keys: Keys, ids: Sequence[int], changed: set[int], batch: int, where: str
) -> array[int]:
    """What _touch_unchanged would return, read-only: changed ids and those gone from Redis."""
    reread: array[int] = array("Q")
    for chunk in chunks(ids, batch):
        values = current_values(client, keys, chunk, where=where)
        reread.extend(i for i, v in zip(chunk, values, strict=True) if v is None or i in changed)
    return reread


def _touch_unchanged(
    pipe: ScriptPipe,
    writer: BatchWriter,
    ids: Sequence[int],
    changed: set[int],
    batch: int,
) -> array[int]:
    """Refresh TTLs of listings not changed since the watermark; return ids to re-read."""
    reread: array[int] = array("Q")
    for chunk in chunks(ids, batch):
        writer.touch([i for i in chunk if i not in changed], reread.extend)
        reread.extend(i for i in chunk if i in changed)
    pipe.finish()
    return reread


def hot_json(ids: Sequence[int], absent: set[int]) -> tuple[bytearray, int]:
    """The hot list as readers get it, and its length; built without a list of a million ints.

    Only ids whose listing this run wrote or confirmed, hottest first. It expires `ttl`
    after the run started, never later than any listing in it (each of those was written
    or refreshed after the start with at least `ttl`).
    """
    hot = bytearray(b"[")
    size = 0
    for product_id in ids:
        if product_id not in absent:
            hot += b"%d," % product_id
            size += 1
    hot[-1:] = b"]" if size else b"[]"
    return hot, size


@dataclass
class DryRunReport:
    """What a warm would change, computed from reads only; also the dry run's batch target."""

    record: RunRecord
    keys: Keys
    client: Client
    where: str
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    would_remove: int = 0
    bytes: int = 0
    hot_changed: bool = False
    misses: misses.MissPeek | None = None  # the miss stream as the run would find it
    samples: list[tuple[str, str, int]] = field(default_factory=list)  # (state, key, bytes)

    def mark(self) -> int:
        return 0  # nothing to guard: a dry run writes nothing

    def send(self, items: Items, mark: int | None = None) -> None:
        """Compare one batch with what readers see now (MGET: no expiry is touched)."""
        ids = [i for i, _ in items]
        current = current_values(self.client, self.keys, ids, where=self.where)
        for (product_id, payload), old in zip(items, current, strict=True):
            self._tally(self.keys.product(product_id), payload, old)

    def _tally(self, key: str, payload: builtins.bytes, old: builtins.bytes | None) -> None:
        if not payload:
            state = "remove" if old is not None else ""
            self.would_remove += old is not None
        elif old is None:
            state, self.new = "new", self.new + 1
        elif old != payload:
            state, self.changed = "changed", self.changed + 1
        else:
            state, self.unchanged = "", self.unchanged + 1
        self.bytes += len(payload)
        if state and len(self.samples) < DRY_RUN_SAMPLES:
            self.samples.append((state, key, len(payload)))


def dry_run(
    settings: Settings, *, full: bool = False, progress: Progress | None = None
) -> DryRunReport:
    """What `run` would do, from reads only; no lock, no write, no expiry touched.

    It re-reads what the run would (in an incremental warm: changed listings and those
    gone from Redis), under the same broken-query guard, so both reach the same verdict.
    The run-log record names its counts would_write and would_remove.
    """
    require_queries(settings)
    keys = settings.keys
    where = describe(settings.redis)
    with _recording(settings, "dry-run") as record, contextlib.ExitStack() as stack:
        record.status = "dry-run"
        client = connect(settings.redis)
        stack.callback(client.close)
        report = DryRunReport(record, keys, client, where)
        deadline = time.monotonic() + settings.run.max_seconds
        previous = hot_meta(client, keys, where=where)
        src = stack.enter_context(contextlib.closing(Source(settings.mysql, deadline=deadline)))
        if settings.warm.miss_queue:
            report.misses = peeked = misses.peek(settings, client, src, record, deadline=deadline)
            record.miss_queue = peeked.queued
            record.miss_invalid, record.miss_absent = peeked.invalid, peeked.absent
        ids = _hot_ids(settings, src, record)
        to_read: Sequence[int] = ids
        now_ms = server_time_ms(client, where=where)
        changed = _changed_ids(
            settings, src, record, previous, full=full, hot=len(ids), now_ms=now_ms
        )
        if changed is not None:
            record.stage = f"looking up unchanged listings in Redis at {where}"
            to_read = _to_reread(client, keys, ids, changed, settings.warm.batch_size, where)
            report.unchanged = len(ids) - len(to_read)
            report.send([(i, b"") for i in _cold(ids, changed)])
        reader = reader_for(settings, src, record, deadline, hot=len(ids))
        reader.run(
            to_read,
            report,
            evidence=cached_evidence(client, keys, where, changed),
            progress=progress,
            where="the comparison",
        )
        old_hot = hot_list(client, keys, where=where)
        report.hot_changed = bool(ids) and old_hot != bytes(hot_json(ids, reader.absent)[0])
        record.written, record.unchanged = report.new + report.changed, report.unchanged
        record.removed, record.bytes = report.would_remove, report.bytes
    return report


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
    keys = settings.keys
    where = describe(settings.redis)
    with _recording(settings, "invalidate") as record, contextlib.ExitStack() as stack:
        result = InvalidateResult(record)
        record.hot, record.hot_ids = len(ids), list(ids[: runlog.HOT_IDS_LOGGED])
        client = connect(settings.redis)
        stack.callback(client.close)
        pipe = ScriptPipe(client, where=where)
        stack.callback(pipe.close)
        states, result.deleted = store_invalidate(pipe, keys, ids, batch=settings.warm.batch_size)
        record.removed = result.deleted
        log.info("invalidate.done", run_id=record.run_id, ids=len(ids), deleted=result.deleted)
        if rewarm:
            deadline = time.monotonic() + settings.run.max_seconds
            src = stack.enter_context(contextlib.closing(Source(settings.mysql, deadline=deadline)))
            result.rewarmed, result.missing = refill(
                settings, client, pipe, src, ids, states, record
            )
    return result
