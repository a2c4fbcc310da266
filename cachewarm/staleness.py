"""`cachewarm audit`: how stale the cache really is, measured against MySQL.

A listing is stale when Redis holds bytes other than those a warm would write now. The
audit finds out the only way that cannot drift from the warm: it reads the listings
through pipeline.Reader with the warm's settings (listing query, json_columns,
max_payload_bytes, the replica's GTID wait), so what it compares with is exactly what a
warm writes, and a listing a warm would remove (no row, rejected) is stale if cached.

An edit is never seen everywhere at once: MySQL has it before its invalidation (or
`follow`) reaches Redis. So a listing that differs is compared again, read afresh from
both, `[audit] recheck_after` seconds later, and reported only if it still differs. A
listing not cached at all is `missing`, never stale: readers fall back to MySQL for it.

Without `fix` nothing is written to Redis, MySQL or the run log; the one file it may
write is its own metrics textfile, `[audit] textfile`, when one is set. With `fix`
the stale listings are repaired as `invalidate --rewarm` repairs them, through the
guard, and that invalidation leaves its run-log record.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from . import metrics
from .config import Settings, require_queries
from .errors import UsageError
from .keys import Keys
from .mysql.replica import reads as replica_reads
from .mysql.source import Source
from .orchestrate import cached_evidence, invalidate
from .pipeline import Evidence, Items, reader_for
from .runlog import RunRecord
from .store.connect import Client, connect, describe
from .store.reads import current_values, hot_list, listing_ids

log = structlog.get_logger("cachewarm")


@dataclass
class AuditReport:
    """What one audit found; `to_dict` is `--json`'s object."""

    checked: int = 0  # listings compared: the sample, or all of them
    stale_ids: list[int] = field(default_factory=list)  # still differing at the re-check
    missing: int = 0  # not cached (at the first look, or gone by the re-check)
    rechecked: int = 0  # differed at the first look
    fixed: int = 0  # stale listings `fix` rewrote, or deleted for having no row now
    hot_published: bool = False  # False: no hot list to sample from

    @property
    def stale(self) -> int:
        return len(self.stale_ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "stale": self.stale,
            "missing": self.missing,
            "stale_ids": self.stale_ids,
            "rechecked": self.rechecked,
            "fixed": self.fixed,
            "hot_published": self.hot_published,
        }


@dataclass
class Comparison:
    """A Reader's target that compares each batch with Redis instead of writing it."""

    client: Client
    keys: Keys
    where: str
    differ: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)

    def mark(self) -> int:
        return 0  # nothing to guard: the comparison writes nothing

    def send(self, items: Items, mark: int | None = None) -> None:
        """Compare one batch with what readers GET now; b'' (remove) differs from any value."""
        ids = [i for i, _ in items]
        current = current_values(self.client, self.keys, ids, where=self.where)
        for (product_id, payload), cached in zip(items, current, strict=True):
            if cached is None:
                self.missing.append(product_id)
            elif cached != payload:
                self.differ.append(product_id)


def audit(
    settings: Settings,
    *,
    sample: int | None = None,
    every: bool = False,
    fix: bool = False,
) -> AuditReport:
    """Compare cached listings with what a warm would write now; with `fix`, repair them.

    `sample` hot-list ids at random (default `[audit] sample`), or with `every` all of
    them and every other cached listing of this prefix and version (SCAN), since readers
    GET those too. Raises UsageError for a sample below 1 or both `sample` and `every`;
    a listing query that finds no row for a batch of cached ids is a SourceError, as in
    a warm, rather than a report that everything is stale.
    """
    if sample is not None and (every or sample < 1):
        raise UsageError("--sample must be at least 1, and cannot go with --all")
    require_queries(settings)
    keys, where = settings.keys, describe(settings.redis)
    report = AuditReport()
    # The Reader keeps its counts in a run record; the audit's is never written: an
    # audit without `fix` writes nothing to disk but its metrics.
    record = RunRecord(secrets.token_hex(6), "audit", prefix=keys.prefix, version=keys.version)
    with contextlib.ExitStack() as stack:
        client = connect(settings.redis)
        stack.callback(client.close)
        hot = hot_list(client, keys, where=where)
        report.hot_published = hot is not None
        ids = _chosen(client, keys, where, hot, every, sample or settings.audit.sample)
        report.checked = len(ids)
        deadline = time.monotonic() + settings.run.max_seconds
        src = stack.enter_context(contextlib.closing(Source(settings.mysql, deadline=deadline)))
        replica = stack.enter_context(replica_reads(settings.mysql, src))

        def compare(chosen: Sequence[int], evidence: Evidence | None) -> Comparison:
            found = Comparison(client, keys, where)
            # The blast-radius limit on the share of all audited ids, as a warm of them.
            reader = reader_for(settings, src, record, deadline, replica, hot=len(ids))
            reader.run(chosen, found, evidence=evidence, where="the comparison")
            return found

        first = compare(ids, cached_evidence(client, keys, where, None))
        report.rechecked = len(first.differ)
        again = Comparison(client, keys, where)
        if first.differ:
            log.info("audit.recheck", ids=len(first.differ), after_s=settings.audit.recheck_after)
            time.sleep(settings.audit.recheck_after)  # for edits whose invalidation is on its way
            again = compare(first.differ, None)
        report.stale_ids = sorted(again.differ)
        report.missing = len(first.missing) + len(again.missing)
    if fix and report.stale_ids:
        result = invalidate(settings, report.stale_ids, rewarm=True)
        report.fixed = result.rewarmed + len(result.missing)
    log.info(
        "audit.done",
        checked=report.checked,
        stale=report.stale,
        missing=report.missing,
        fixed=report.fixed,
    )
    if settings.audit.textfile:
        _write_metrics(Path(settings.audit.textfile), keys, report)
    return report


def _chosen(
    client: Client, keys: Keys, where: str, hot: builtins.bytes | None, every: bool, sample: int
) -> list[int]:
    """The ids to audit: a random sample of the hot list, or all cached listings."""
    ids: list[int] = json.loads(hot) if hot else []
    if not every:
        return random.sample(ids, min(sample, len(ids)))
    listed = set(ids)
    for product_id in listing_ids(client, keys, where=where):
        if product_id not in listed:  # SCAN may repeat a key
            listed.add(product_id)
            ids.append(product_id)
    return ids


def _write_metrics(path: Path, keys: Keys, report: AuditReport) -> None:
    """Replace the audit's textfile; failing to is a warning, the audit's result stands."""
    gauges = [
        ("cachewarm_audit_checked_listings", "Listings the last audit compared.", report.checked),
        (
            "cachewarm_audit_stale_listings",
            "Listings the last audit found stale, after the re-check; alert on > 0.",
            report.stale,
        ),
        (
            "cachewarm_audit_missing_listings",
            "Listings the last audit found not cached.",
            report.missing,
        ),
        (
            "cachewarm_audit_fixed_listings",
            "Stale listings the last audit's --fix repaired.",
            report.fixed,
        ),
        (
            "cachewarm_audit_last_timestamp_seconds",
            "When an audit last completed; alert on its age too.",
            round(time.time(), 3),
        ),
    ]
    labels = {"prefix": keys.prefix, "version": str(keys.version)}
    try:
        metrics.write_gauges(path, labels, gauges)
    except OSError as exc:
        log.warning("metrics.unwritable", path=str(path), error=str(exc))
