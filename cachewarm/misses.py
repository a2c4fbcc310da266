"""Misses readers report: a Redis stream that `run` and `follow` drain, staying the only writer.

A reader that finds no listing sends `XADD {prefix}:v{version}:misses MAXLEN ~ N * id
<id>` and reads MySQL as before; it never writes the listing. The warmer reads each
reported product through pipeline.Reader and writes it through the warm's BatchWriter,
with the slot states learned before that read: the same bytes, TTL and guard as a hot
listing, so an `invalidate` racing the fill wins as it wins over a warm. A filled
product does not join the hot list.

Consumed only once written: entries are read through one consumer group (`MISS_GROUP`)
and acknowledged (then deleted, so the stream's length is what is still queued) only
after the batch they name was written, so a crash loses none. An entry a crashed
consumer took stays pending, and after `[warm] miss_claim_after` seconds the next run
or the follower takes it over (XAUTOCLAIM). `run` and `follow` are consumers of the
same group: each entry goes to one of them.

Bounded: a run takes at most `[warm] miss_per_run` entries, so a flood cannot stretch it
past its deadline, and each drain trims the stream to `[warm] miss_queue_max` (what
readers' MAXLEN should keep it to anyway). An entry that is not a product id (not a
plain positive decimal, above BIGINT UNSIGNED, other fields) is dropped and counted. No
key is created while no reader reports: the group is made only on an existing stream.

Counted: a run's counts go into its record; the follower's add up over its whole life
(one MissCounts across reconnects) and go into its metrics file. A dry run (`peek`)
counts what the next run would take the same way, reading only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions
import structlog

from .config import Settings
from .errors import CachewarmError
from .keys import MAX_ID, MISS_GROUP, Keys
from .lock import Fence
from .mysql.replica import ReplicaReads
from .mysql.source import Source
from .pipeline import Items, Reader, reader_for, writer_for
from .runlog import RunRecord
from .store.connect import Client, connect, describe, failing_as
from .store.pipe import ScriptPipe
from .store.reads import server_time_ms
from .store.slots import learn_states

log = structlog.get_logger("cachewarm")

Entry = tuple[bytes, dict[bytes, bytes]]  # (stream id, fields)

FOLLOW_BLOCK_MS = 250  # how long the follower's read waits for entries; bounds its stop time
QUEUE_LOOK_S = 1.0  # how often the follower looks at the queue's length, for its metrics
MAX_BACKOFF_S = 30.0

# Deletes a consumer only while it holds no pending entry: deleting one that holds some
# would drop them from the group unacknowledged, and nobody would ever warm them.
# KEYS[1] the stream, ARGV[1] the group, ARGV[2] the consumer.
FORGET_CONSUMER = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""


def entry_id(fields: dict[bytes, bytes]) -> int | None:
    """The product id of one entry, or None: exactly one field `id`, a plain positive
    decimal (no sign, no leading zero: the form a listing key holds) up to BIGINT UNSIGNED."""
    if len(fields) != 1:
        return None
    value = fields.get(b"id")
    if value is None or not value.isdigit() or value.startswith(b"0") or len(value) > 20:
        return None
    product_id = int(value)
    return product_id if product_id <= MAX_ID else None


def product_ids(entries: Sequence[Entry], seen: set[int]) -> tuple[list[int], int]:
    """The ids these entries name that are not in `seen` yet (added to it), in entry
    order, and how many entries name no product id: what a drain fills and counts."""
    ids, invalid = [], 0
    for _, fields in entries:
        product_id = entry_id(fields)
        if product_id is None:
            invalid += 1
        elif product_id not in seen:
            seen.add(product_id)
            ids.append(product_id)
    return ids, invalid


def absent_ids(reader: Reader) -> int:
    """Ids the listing query found no row for; the run's own checks' rejections are not."""
    rejected = set(reader.rejected.ids)
    return sum(i not in rejected for i in reader.absent)


@dataclass
class MissCounts:
    """What a drain did; a run copies it into its record. The follower's is one object for
    its whole life, across reconnects: its drain thread alone writes it, and the metrics
    file reads it."""

    taken: int = 0  # entries consumed (acknowledged)
    filled: int = 0  # listings written or confirmed current
    invalid: int = 0  # entries that name no product id
    absent: int = 0  # ids without a listing row
    skipped: int = 0  # invalidated while being read: left to the next miss
    queued: int = 0  # entries in the stream at the follower's last look (QUEUE_LOOK_S)
    seen: set[int] = field(default_factory=set)  # ids filled by this drain: repeats are not


def consumer_name(role: str) -> str:
    """Unique per process and drain: host, pid, a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}:{secrets.token_hex(4)}"


class Drain:
    """One consumer of the miss stream with its connections: takes, fills, acknowledges."""

    def __init__(
        self,
        settings: Settings,
        client: Client,
        src: Source,
        record: RunRecord,
        *,
        consumer: str,
        fence: Fence | None = None,
        deadline: float | None = None,
        replica: ReplicaReads | None = None,
        counts: MissCounts | None = None,
    ) -> None:
        self.settings = settings
        self.keys: Keys = settings.keys
        self.key = settings.keys.misses
        self.client = client
        self.src = src
        self.record = record
        self.consumer = consumer
        self.fence = fence  # the run's; None: a fresh deadline-only fence per batch (follow)
        self.deadline = deadline
        self.replica = replica
        self.where = describe(settings.redis)
        self.counts = MissCounts() if counts is None else counts
        self.claim_ms = int(settings.warm.miss_claim_after * 1000)
        self.grouped = False

    def ensure_group(self) -> bool:
        """Create the group on the stream (from its first entry); False: no stream yet."""
        if self.grouped:
            return True
        with failing_as(self.where):
            try:
                self.client.xgroup_create(self.key, MISS_GROUP, id="0")
            except redis.exceptions.ResponseError as exc:
                if "requires the key to exist" in str(exc):
                    return False
                if str(exc).startswith("WRONGTYPE"):  # someone else's key: warm without it
                    log.warning("misses.unreadable", key=self.key, error=str(exc))
                    return False
                if not str(exc).startswith("BUSYGROUP"):
                    raise
        self.grouped = True
        return True

    def claim(self, count: int) -> list[Entry]:
        """Entries other consumers took more than miss_claim_after ago and never acknowledged."""
        taken: list[Entry] = []
        cursor: bytes | str = "0-0"
        with failing_as(self.where):
            while len(taken) < count:
                reply: Any = self.client.xautoclaim(
                    self.key, MISS_GROUP, self.consumer, self.claim_ms, cursor, count - len(taken)
                )
                cursor = reply[0]
                taken += [(i, f) for i, f in reply[1] if f is not None]
                if cursor in (b"0-0", "0-0"):
                    break
        return taken

    def read_new(self, count: int, *, block_ms: int | None = None) -> list[Entry]:
        """Entries no consumer has taken yet, oldest first."""
        with failing_as(self.where):
            reply: Any = self.client.xreadgroup(
                MISS_GROUP, self.consumer, {self.key: ">"}, count=count, block=block_ms
            )
        return [entry for _, entries in reply or [] for entry in entries]

    def fill(self, entries: Sequence[Entry], *, repeat: bool = False) -> None:
        """Warm the products these entries name, then acknowledge and delete the entries.

        `repeat`: warm an id again even if this drain filled it before (the follower,
        which runs for days); a run warms each id once.
        """
        counts = self.counts
        ids, invalid = product_ids(entries, counts.seen)
        counts.invalid += invalid
        if ids:
            self._warm(ids)
        names = [name for name, _ in entries]
        with failing_as(self.where):
            pipe = self.client.pipeline(transaction=False)
            pipe.xack(self.key, MISS_GROUP, *names)
            pipe.xdel(self.key, *names)
            pipe.execute()
        counts.taken += len(entries)
        if repeat:
            counts.seen.clear()

    def _warm(self, ids: list[int]) -> None:
        """The warm's path for these ids: states learned, then read, then guarded writes."""
        settings, counts = self.settings, self.counts
        self.record.stage = f"filling {len(ids)} reported misses from {self.src.where}"
        pipe = ScriptPipe(self.client, where=self.where, lock_key=self.keys.lock)
        try:
            fence = self.fence or Fence(
                lock_key=self.keys.lock,
                deadline_ms=server_time_ms(self.client, where=self.where)
                + int(settings.run.max_seconds * 1000),
            )
            writer = writer_for(settings, pipe, fence, learn_states(pipe, self.keys, ids))
            reader = reader_for(settings, self.src, self.record, self.deadline, self.replica)
            reader.run(ids, writer, evidence=None, where=self.where)
            pipe.finish()
        finally:
            pipe.close()
        counts.filled += writer.totals.written + writer.totals.unchanged
        counts.skipped += len(writer.skipped)
        counts.absent += absent_ids(reader)

    def trim(self) -> None:
        """Keep the stream within miss_queue_max, should a reader XADD without MAXLEN."""
        with failing_as(self.where):
            # An approximate trim removes whole stream nodes, at most 100 of them per call.
            while self.client.xtrim(
                self.key, maxlen=self.settings.warm.miss_queue_max, approximate=True
            ):
                pass

    def forget_idle_consumers(self) -> None:
        """Drop this consumer, and others idle past miss_claim_after, if they hold nothing."""
        with failing_as(self.where):
            others = self.client.xinfo_consumers(self.key, MISS_GROUP)
            for info in others:
                name = info["name"]
                name = name.decode() if isinstance(name, bytes) else str(name)
                if name == self.consumer or (
                    int(info["pending"]) == 0 and int(info["idle"]) > self.claim_ms
                ):
                    self.client.eval(FORGET_CONSUMER, 1, self.key, MISS_GROUP, name)

    def look(self) -> None:
        """Note the queue's length now, for the follower's metrics."""
        self.counts.queued = queue_length(self.client, self.keys, where=self.where)


def queue_length(client: Client, keys: Keys, *, where: str) -> int:
    """Entries queued now (acknowledged ones are deleted, so this is the backlog)."""
    with failing_as(where):
        try:
            return int(client.xlen(keys.misses))
        except redis.exceptions.ResponseError:  # not a stream: someone else's key
            return 0


def drain_run(
    settings: Settings,
    client: Client,
    src: Source,
    record: RunRecord,
    *,
    fence: Fence,
    deadline: float,
    replica: ReplicaReads | None = None,
) -> MissCounts:
    """`run`'s drain, under its lock and fence: at most miss_per_run entries, then stop.

    Entries crashed consumers left are taken first, then new ones, a batch at a time;
    the counts and the queue left go into the run's record.
    """
    drain = Drain(
        settings,
        client,
        src,
        record,
        consumer=consumer_name(f"run-{record.run_id}"),
        fence=fence,
        deadline=deadline,
        replica=replica,
    )
    record.stage = f"reading {settings.keys.misses} on {drain.where}"
    if drain.ensure_group():
        drain.trim()
        left, batch = settings.warm.miss_per_run, settings.warm.batch_size
        claiming = True
        while left > 0:
            entries = drain.claim(min(batch, left)) if claiming else []
            claiming = bool(entries)
            entries = entries or drain.read_new(min(batch, left))
            if not entries:
                break
            drain.fill(entries)
            left -= len(entries)
        drain.forget_idle_consumers()
    counts = drain.counts
    record.miss_taken, record.miss_filled = counts.taken, counts.filled
    record.miss_invalid, record.miss_absent = counts.invalid, counts.absent
    record.skipped_invalidated += counts.skipped
    record.miss_queue = queue_length(client, settings.keys, where=drain.where)
    log.info(
        "misses.drained",
        run_id=record.run_id,
        taken=counts.taken,
        filled=counts.filled,
        invalid=counts.invalid,
        absent=counts.absent,
        queued=record.miss_queue,
    )
    return counts


@dataclass
class MissPeek:
    """What the next run would take from the stream, seen without consuming it."""

    queued: int = 0  # entries in the stream
    would_take: int = 0  # min(queued, miss_per_run)
    ids: int = 0  # distinct product ids among those
    invalid: int = 0  # entries among those that name no product id
    absent: int = 0  # ids among those without a listing row


class _Unsent:
    """The dry run's target for the misses: the Reader reads and checks, nothing is sent."""

    def mark(self) -> int:
        return 0

    def send(self, items: Items, mark: int | None = None) -> None:
        return None


def peek(
    settings: Settings, client: Client, src: Source, record: RunRecord, *, deadline: float
) -> MissPeek:
    """The dry run's view: XLEN and XRANGE, no group, no acknowledgement, no write.

    The ids are read through the run's Reader and counted as a run counts them, so an
    id without a listing row is absent here exactly when the run would find it so.
    """
    where, key = describe(settings.redis), settings.keys.misses
    report = MissPeek(queued=queue_length(client, settings.keys, where=where))
    if not report.queued:
        return report
    record.stage = f"reading {key} on {where}"
    with failing_as(where):
        entries: Any = client.xrange(key, count=settings.warm.miss_per_run)
    ids, report.invalid = product_ids(entries, set())
    report.would_take, report.ids = len(entries), len(ids)
    if ids:
        reader = reader_for(settings, src, record, deadline)
        reader.run(ids, _Unsent(), evidence=None, where="nowhere (a dry run)")
        report.absent = absent_ids(reader)
    return report


def follow_loop(settings: Settings, stop: threading.Event, counts: MissCounts) -> None:
    """Drain continuously until `stop`: what `follow` runs beside the binlog.

    Its own connections; a failure is logged and retried with backoff, never raised:
    the follower's invalidations matter more than any miss, and must go on whatever
    happens here, so even an unexpected error is one warning line and a retry.
    """
    backoff = 0.5
    while not stop.is_set():
        try:
            with _follower_drain(settings, counts) as drain:
                backoff = 0.5
                _follow(drain, stop)
        except Exception as exc:
            error = str(exc) if isinstance(exc, CachewarmError) else f"{type(exc).__name__}: {exc}"
            log.warning("misses.drain_failed", error=error, retry_in_s=backoff)
            if stop.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF_S)


@contextlib.contextmanager
def _follower_drain(settings: Settings, counts: MissCounts) -> Iterator[Drain]:
    client = connect(settings.redis)
    src: Source | None = None
    drain: Drain | None = None
    try:
        src = Source(settings.mysql)
        record = RunRecord(run_id=secrets.token_hex(6), command="follow")
        drain = Drain(
            settings, client, src, record, consumer=consumer_name("follow"), counts=counts
        )
        yield drain
    finally:
        if drain is not None and drain.grouped:
            with contextlib.suppress(CachewarmError, redis.exceptions.RedisError):
                drain.forget_idle_consumers()
        if src is not None:
            src.close()
        client.close()


def _follow(drain: Drain, stop: threading.Event) -> None:
    batch = drain.settings.warm.batch_size
    claim_every = drain.claim_ms / 2000
    next_claim = next_look = 0.0
    while not stop.is_set():
        if time.monotonic() >= next_look:
            drain.look()
            next_look = time.monotonic() + QUEUE_LOOK_S
        if not drain.ensure_group():
            stop.wait(FOLLOW_BLOCK_MS / 1000)  # no stream until a reader reports a miss
            continue
        entries: list[Entry] = []
        try:
            if time.monotonic() >= next_claim:
                drain.trim()
                entries = drain.claim(batch)
                next_claim = time.monotonic() + claim_every
            entries = entries or drain.read_new(batch, block_ms=FOLLOW_BLOCK_MS)
        except CachewarmError as exc:
            if "NOGROUP" not in str(exc):
                raise
            drain.grouped = False  # the stream was deleted (or evicted): start again
            continue
        if entries:
            drain.fill(entries, repeat=True)
            log.debug("misses.filled", taken=len(entries), filled=drain.counts.filled)


def enabled(settings: Settings) -> bool:
    """Whether `follow` drains the stream: there is a queue to drain (`[warm]
    miss_queue`) and a listing query to fill it with."""
    return settings.warm.miss_queue and bool(settings.warm.listing_query.strip())


@contextlib.contextmanager
def draining(settings: Settings, counts: MissCounts) -> Iterator[None]:
    """`follow`'s hook: drain in a thread while the block runs, when `enabled`; what
    the thread does adds up in `counts`."""
    if not enabled(settings):
        yield
        return
    stop = threading.Event()
    thread = threading.Thread(target=follow_loop, args=(settings, stop, counts), name="misses")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
