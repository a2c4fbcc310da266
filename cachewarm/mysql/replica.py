"""Reading the warm's queries from a replica without ever writing back an old row.

The slot-state guard (cachewarm.store) makes a warm skip any product whose slot an
invalidation touched after the batch's mark. A replica adds a second way to read the
past: a batch that starts after an invalidation can still get the row as it was before
the edit, if the replica has not applied the edit yet. So before each batch the warm
asks the primary for its GTID position, which covers every edit whose invalidation came
before the batch's slot-state mark, and waits (with
MASTER_GTID_WAIT, MariaDB) until the replica has applied it. A replica further behind
than `[mysql] replica_max_wait` is skipped for that batch: it is read from the primary.

The hot query reads the replica without waiting (an old ranking only ranks; it
writes no listing). The changed query and every refill after an invalidation
(`invalidate --rewarm`, `follow --rewarm`) read the primary.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

import structlog

from ..config import MySQLSettings
from .source import Source

log = structlog.get_logger("cachewarm")


class ReplicaReads:
    """Picks the connection each listing batch reads from: a caught-up replica, or the primary."""

    def __init__(self, primary: Source, replica: Source, max_wait: float) -> None:
        self.primary = primary
        self.replica = replica
        self.max_wait = max_wait
        self.lagging_batches = 0

    def for_batch(self) -> Source:
        """Call after taking the batch's slot-state mark, before its listing query."""
        if self.replica.wait_for_gtid(self.primary.gtid_position(), self.max_wait):
            return self.replica
        self.lagging_batches += 1
        log.warning("replica.lagging", replica=self.replica.where, read_from=self.primary.where)
        return self.primary


@contextlib.contextmanager
def reads(settings: MySQLSettings, primary: Source) -> Iterator[ReplicaReads | None]:
    """ReplicaReads for `[mysql] replica_url`, or None when there is no replica."""
    if not settings.replica_url:
        yield None
        return
    replica = Source(replace(settings, url=settings.replica_url))
    try:
        yield ReplicaReads(primary, replica, settings.replica_max_wait)
    finally:
        replica.close()
