"""The one batch loop every listing read goes through: read, encode, check, hand on.

A warm, a dry run and the refill of `invalidate --rewarm` differ only in where a batch
goes (a fenced writer, or a comparison with what Redis holds) and in whether a batch
with no rows at all may be taken as a broken listing query. Keeping one loop keeps
them agreeing on what a listing is: which ids are absent, which are too large, and that
a batch is handed on with the mark its target took before the batch's query went out
(the writer's guard relies on it: that query may be sent ahead, see Reader.run).

A listing that cannot be written goes on as an empty payload: the target deletes
whatever is cached for it, and the id stays out of the hot list. Keeping an old value
instead would let an incremental run refresh it and name it again, forever. An id with
no row goes so in its own batch. One the run's own checks reject (json_columns not JSON,
over max_payload_bytes) is held back to the end of the run, because those checks fail
together when the config is wrong, not the data: a run that rejects more than
`max_rejected` of them fails before deleting any, and the previous hot list stays.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from .config import Settings
from .errors import DeadlineExceeded, SourceError, TooManyRejected
from .lock import Fence
from .mysql.encode import InvalidJSON
from .mysql.replica import ReplicaReads
from .mysql.source import Ahead, Source
from .runlog import RunRecord
from .store.connect import Client, describe
from .store.pipe import ScriptPipe
from .store.reads import server_time_ms
from .store.slots import SlotStates
from .store.writer import BatchWriter

log = structlog.get_logger("cachewarm")

Progress = Callable[[int, int], None]  # (ids just done, total ids)
Items = list[tuple[int, bytes]]  # (product id, listing JSON); b"" = no listing to keep
# How many ids of a batch have a listing cached now that the run has no reason to think
# changed (the broken-query guard's evidence; see Reader.run).
Evidence = Callable[[Sequence[int]], int]
# A batch this large with no row at all is taken for a broken listing query even when
# none of it is cached: that many hot products do not vanish at once.
EMPTY_BATCH_EVIDENCE = 100


class Target(Protocol):
    """Where batches go, each with the mark taken before its query (see store.writer)."""

    def mark(self) -> int: ...

    def send(self, items: Items, mark: int | None = None) -> None: ...


SHOWN_IDS = 5  # rejected ids named in the one line that reports them


@dataclass
class Rejections:
    """Listings the run's own checks refused, counted by reason, in read order."""

    invalid_json: int = 0  # a json_columns value that is not JSON
    oversize: int = 0  # over max_payload_bytes
    first: str = ""  # the first one's reason, with its product id
    ids: array[int] = field(default_factory=lambda: array("Q"))

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, product_id: int, payload: bytes | InvalidJSON, limit: int) -> bool:
        """Count `payload` if the checks refuse it; False if it may be written."""
        if isinstance(payload, InvalidJSON):
            self.invalid_json += 1
            reason = str(payload)
        elif len(payload) > limit:
            self.oversize += 1
            reason = f"{len(payload)} bytes, over max_payload_bytes {limit}"
        else:
            return False
        self.first = self.first or f"product {product_id}: {reason}"
        self.ids.append(product_id)
        return True

    def summary(self) -> str:
        """Counts by reason, the first reason and the first ids, for one line."""
        shown = ", ".join(map(str, self.ids[:SHOWN_IDS])) + (
            ", ..." if len(self) > SHOWN_IDS else ""
        )
        return (
            f"{self.invalid_json} not JSON in [warm] json_columns, {self.oversize} over "
            f"[warm] max_payload_bytes; first {self.first}; ids {shown}"
        )

    def refuse(self, limit: int, read: int, hot: int) -> None:
        """Fail the run, before it acts on them, if more than `limit` were rejected.

        It stops as soon as the limit is passed: the first `read` of `hot` ids are read.
        """
        if len(self) > limit:
            of = f"{hot}" if read >= hot else f"the first {read} of {hot}"
            raise TooManyRejected(
                f"{len(self)} of {of} hot listings rejected by the run's own checks, more "
                f"than [warm] max_rejected_share allows ({limit}): kept their cached "
                f"listings and the previous hot list ({self.summary()})"
            )


def chunks(ids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


class Reader:
    """Reads listings batch by batch for one run, recording what it found."""

    def __init__(
        self,
        src: Source,
        *,
        listing_query: str,
        json_columns: Sequence[str] = (),
        max_payload_bytes: int,
        batch_size: int,
        record: RunRecord,
        deadline: float | None = None,
        pick_source: Callable[[], Source] | None = None,
        max_rejected: int | None = None,
    ) -> None:
        self.src = src
        # Called once per batch, before its query (replica.ReplicaReads.for_batch).
        self.pick_source = pick_source
        self.query = listing_query
        self.json_columns = json_columns
        self.limit = max_payload_bytes
        self.batch_size = batch_size
        self.record = record
        self.deadline = deadline
        self.absent: set[int] = set()  # no row, or rejected: never named in a hot list
        self.rows = 0  # ids the listing query returned a row for, written or not
        self.rejected = Rejections()
        # More rejections than this fail the run (see Rejections.refuse); None: no limit.
        self.max_rejected = max_rejected
        self._warned_repeats = False

    def run(
        self,
        ids: Sequence[int],
        target: Target,
        *,
        evidence: Evidence | None,
        progress: Progress | None = None,
        where: str = "Redis",
    ) -> None:
        """Read every id's listing and send each batch to `target`.

        With `evidence`, a batch that finds no row for any id, before any row was found
        in this run, fails the run before anything is sent when it points at a broken
        listing_query rather than at products that are gone: some of its ids have a
        listing cached now that nothing reported changed (the query found them at the
        last run), or the batch holds EMPTY_BATCH_EVIDENCE ids or more. A few re-read
        products that were deleted or hidden are no such evidence; they are removed.

        Rejected listings are removed last, in one batch, once the run knows it is
        within `max_rejected`; past it the run fails as soon as it is, removing none.
        """
        record = self.record
        batches = chunks(ids, self.batch_size)
        batch, mark, number, done = next(batches, None), target.mark(), 0, 0
        sent: Ahead | None = None  # this batch's query, when it went out ahead
        while batch is not None:
            number += 1
            record.stage = f"running the listing query on {self.src.where} (batch {number})"
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise DeadlineExceeded("run passed run.max_seconds; stopped")
            if self.pick_source:
                self.src = self.pick_source()
                record.stage = f"running the listing query on {self.src.where} (batch {number})"
            # The next batch's query may go out as soon as this one's rows are in, and run
            # on the server while this batch is written (Source.listings): its mark is
            # taken now. Not when each batch picks its source (a replica that must catch
            # up first).
            following = next(batches, None)
            ahead = None
            if following is not None and self.pick_source is None:
                ahead = Ahead(following)
            next_mark = target.mark() if ahead else 0
            rows_before = self.rows
            items = self.read(sent or batch, then=ahead)
            if evidence is not None and self.rows == rows_before == 0:
                self._judge_empty(batch, evidence)
            done += len(batch)
            if self.max_rejected is not None:
                self.rejected.refuse(self.max_rejected, done, len(ids))
            record.stage = f"writing batch {number} to {where}"
            target.send(items, mark)
            log.debug("batch.sent", run_id=record.run_id, ids=len(batch), listings=len(items))
            if progress:
                progress(len(batch), len(ids))
            batch, sent, mark = following, ahead, next_mark or target.mark()
        if self.rejected:
            log.warning(
                "listings.rejected",
                run_id=record.run_id,
                count=len(self.rejected),
                detail=self.rejected.summary(),
            )
            record.stage = f"removing rejected listings from {where}"
            target.send([(i, b"") for i in self.rejected.ids], target.mark())

    def _judge_empty(self, batch: Sequence[int], evidence: Evidence) -> None:
        self.record.stage = (
            f"checking a batch the listing query found no row for on {self.src.where}"
        )
        cached = evidence(batch)
        if cached or len(batch) >= EMPTY_BATCH_EVIDENCE:
            raise SourceError(
                f"listing query returned no row for any of the first {len(batch)} hot ids "
                f"({cached} of them cached and not reported changed); refusing to delete "
                "their listings (check [warm] listing_query)"
            )

    def read(self, batch: Sequence[int] | Ahead, *, then: Ahead | None = None) -> Items:
        """Listings of one batch, in batch order.

        An id without a row gets b'' (whatever is cached for it is removed); one over
        max_payload_bytes, or whose json_columns value is not JSON, is left out and
        counted in `rejected` (see run). Both go into `absent`. When the query returns
        several rows for one id, the first wins, and the run warns once. `then`: the next
        batch to read, see Source.listings; `batch` is that handle when this batch's
        query was sent ahead.
        """
        found: dict[int, bytes | InvalidJSON] = {}
        repeats: dict[int, int] = {}
        for product_id, payload in self.src.listings(
            self.query, batch, json_columns=self.json_columns, then=then
        ):
            if product_id in found:
                repeats[product_id] = repeats.get(product_id, 1) + 1
            else:
                found[product_id] = payload
        self.rows += len(found)
        if repeats and not self._warned_repeats:
            self._warned_repeats = True
            product_id, rows = next(iter(repeats.items()))
            log.warning(
                "listing.duplicate_rows",
                run_id=self.record.run_id,
                product_id=product_id,
                rows=rows,
                kept="first",
            )
        items: Items = []
        rejected = self.rejected
        before = rejected.invalid_json, rejected.oversize
        for product_id in batch.ids if isinstance(batch, Ahead) else batch:
            payload = found.get(product_id, b"")
            if rejected.add(product_id, payload, self.limit):
                self.absent.add(product_id)
                continue
            assert not isinstance(payload, InvalidJSON)  # for mypy: add() took those
            if payload:
                self.record.read += 1
            else:
                self.absent.add(product_id)
            items.append((product_id, payload))
        self.record.skipped_invalid_json += rejected.invalid_json - before[0]
        self.record.skipped_oversize += rejected.oversize - before[1]
        return items


def reader_for(
    settings: Settings,
    src: Source,
    record: RunRecord,
    deadline: float | None,
    replica: ReplicaReads | None = None,
    *,
    hot: int | None = None,
) -> Reader:
    """The Reader of a run: `[warm]`'s query and limits; a replica picked per batch if any.

    With `hot`, the size of the hot set, under the blast-radius limit.
    """
    return Reader(
        src,
        pick_source=replica.for_batch if replica else None,
        listing_query=settings.warm.listing_query,
        json_columns=settings.warm.json_columns,
        max_payload_bytes=settings.warm.max_payload_bytes,
        batch_size=settings.warm.batch_size,
        record=record,
        deadline=deadline,
        max_rejected=None if hot is None else int(settings.warm.max_rejected_share * hot),
    )


def writer_for(
    settings: Settings, pipe: ScriptPipe, fence: Fence, states: SlotStates
) -> BatchWriter:
    """The BatchWriter of a run: `[warm]`'s TTL and jitter, fenced by `fence`."""
    return BatchWriter(
        pipe,
        settings.keys,
        fence,
        states,
        ttl_s=settings.warm.ttl,
        jitter=settings.warm.ttl_jitter,
    )


def refill(
    settings: Settings,
    client: Client,
    pipe: ScriptPipe,
    src: Source,
    ids: Sequence[int],
    states: SlotStates,
    record: RunRecord,
) -> tuple[int, list[int]]:
    """Read listings just invalidated fresh from MySQL (the primary) and write them.

    `states` are the slot states the invalidation left (store.writer.invalidate): written
    through the warm's guard with them, so an invalidation after this one still wins.
    Returns (listings written or confirmed, ids with no row). `invalidate --rewarm` and
    `follow --rewarm` both refill this way.
    """
    where = describe(settings.redis)
    deadline = time.monotonic() + settings.run.max_seconds
    now_ms = server_time_ms(client, where=where)
    fence = Fence(
        lock_key=settings.keys.lock, deadline_ms=now_ms + int(settings.run.max_seconds * 1000)
    )
    writer = writer_for(settings, pipe, fence, states)
    reader = reader_for(settings, src, record, deadline)
    reader.run(ids, writer, evidence=None, where=where)
    pipe.finish()
    rewarmed = writer.totals.written + writer.totals.unchanged
    record.written, record.bytes = record.written + rewarmed, record.bytes + writer.totals.bytes
    record.skipped_invalidated += len(writer.skipped)
    return rewarmed, [i for i in ids if i in reader.absent]
