"""The one batch loop every listing read goes through: read, encode, check, hand on.

A warm, a dry run and the refill of `invalidate --rewarm` differ only in where a batch
goes (a fenced writer, or a comparison with what Redis holds) and in whether a batch
with no rows at all may be taken as a broken listing query. Keeping one loop keeps
them agreeing on what a listing is: which ids are absent, which are too large, and that
a batch is handed on only after its query (the writer's guard relies on that order).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import structlog

from .errors import DeadlineExceeded, SourceError
from .runlog import RunRecord
from .source import Source

log = structlog.get_logger("cachewarm")

Progress = Callable[[int, int], None]  # (ids just done, total ids)
Items = list[tuple[int, bytes]]  # (product id, listing JSON); b"" = no listing row


class Target(Protocol):
    """Where batches go, each right after its query (see sink.BatchWriter)."""

    def send(self, items: Items) -> None: ...


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
        max_payload_bytes: int,
        batch_size: int,
        record: RunRecord,
        deadline: float | None = None,
    ) -> None:
        self.src = src
        self.query = listing_query
        self.limit = max_payload_bytes
        self.batch_size = batch_size
        self.record = record
        self.deadline = deadline
        self.absent: set[int] = set()  # no row, or too large: never named in a hot list

    def run(
        self,
        ids: Sequence[int],
        target: Target,
        *,
        refuse_empty: bool,
        progress: Progress | None = None,
        where: str = "Redis",
    ) -> None:
        """Read every id's listing and send each batch to `target`.

        With `refuse_empty`, a first batch that finds no row for any id fails the run
        before anything is sent: deleting every listing because the query matched
        nothing is far more likely a broken listing_query than a shop whose hot
        products all vanished.
        """
        record = self.record
        for number, batch in enumerate(chunks(ids, self.batch_size), 1):
            record.stage = f"running the listing query on {self.src.where} (batch {number})"
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise DeadlineExceeded("run passed run.max_seconds; stopped")
            items = self.read(batch)
            if refuse_empty and not record.read and not any(payload for _, payload in items):
                raise SourceError(
                    f"listing query returned no row for any of the first {len(batch)} hot ids; "
                    "refusing to delete their listings (check [warm] listing_query)"
                )
            record.stage = f"writing batch {number} to {where}"
            target.send(items)
            log.debug("batch.sent", run_id=record.run_id, ids=len(batch), listings=len(items))
            if progress:
                progress(len(batch), len(ids))

    def read(self, batch: Sequence[int]) -> Items:
        """Listings of one batch, in batch order.

        An id without a row gets b'' (its stale listing is removed); an oversize one is
        left out. Both go into `absent`.
        """
        found = dict(self.src.listings(self.query, batch))
        items: Items = []
        for product_id in batch:
            payload = found.get(product_id, b"")
            if len(payload) > self.limit:
                self.record.skipped_oversize += 1
                log.warning(
                    "listing.oversize", product_id=product_id, bytes=len(payload), limit=self.limit
                )
                self.absent.add(product_id)
                continue
            if payload:
                self.record.read += 1
            else:
                self.absent.add(product_id)
            items.append((product_id, payload))
        return items
