"""`cachewarm follow`: invalidate listings from the binlog, so no edit path can forget to.

Row events of the `[follow]` tables become product ids (both row images of an UPDATE
count), batched for up to `max_delay` seconds, and go through the same guarded
invalidation as `cachewarm invalidate`: fresh slot states (cachewarm.store), so a warm
in flight never writes back what it read before the change.

At least once: the checkpoint (binlog file, offset, GTID) is written, atomically and
fsynced, only after the invalidations of every event before it were applied, and only
at a transaction boundary. A restart, a reconnect or a kill -9 replays from there;
replaying an invalidation is harmless. A checkpoint the server can no longer serve is
an error, never a silent skip: `--resync` invalidates every cached listing under the
lock (no warm in flight, so none can write back an old read) and starts from now.
The checkpoint file (checkpoint.py) doubles as the follower's status.

Changes without row events invalidate every cached listing, through the guard (every
slot gets a fresh state, then every cached listing is deleted) rather than the lock,
so a long warm does not hold the follower up: TRUNCATE, DROP, RENAME, ALTER or CREATE OR
REPLACE of a watched table (statements.py), any change to a table whose foreign key
cascades into a watched one (server.cascading_parents), and an XA COMMIT whose PREPARE
this process did not read. An XA transaction is invalidated at its PREPARE and again at
its COMMIT: a warm between the two reads the old row. DML written as a statement, a
compressed event, a table map without column names or a partial row image stop the
follower (exit 2) before its checkpoint: the server's binlog settings changed.

The binlog can reach the follower a moment before InnoDB makes the commit visible to
other readers; a warm reading then puts the old row back after the invalidation. Every
invalidation is therefore repeated `[follow] reinvalidate_after` seconds later.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pymysql
import structlog
from pymysqlreplication.event import (
    HeartbeatLogEvent,
    MariadbGtidEvent,
    NotImplementedEvent,
    QueryEvent,
    XAPrepareEvent,
)

from .. import lock, metrics, misses
from ..config import Settings, require_queries
from ..errors import (
    BinlogUnfit,
    CachewarmError,
    ConfigError,
    LockHeld,
    LostPosition,
    SinkError,
    SourceError,
)
from ..files import ensure_private_dir
from ..keys import Keys
from ..misses import MissCounts
from ..mysql import source
from ..pipeline import refill
from ..runlog import RunRecord
from ..store.connect import Client, connect, describe
from ..store.pipe import ScriptPipe
from ..store.writer import invalidate, renew_states
from . import server, statements
from .changes import Batch, Rows, collect
from .checkpoint import load_state, lockfile, save_state
from .server import Position

log = structlog.get_logger("cachewarm")

IDLE_SAVE_S = 5.0  # how often a quiet follower still refreshes its status in the file
MAX_BACKOFF_S = 30.0
RESYNC_SCAN = 1000
_DISCONNECTS = (pymysql.MySQLError, OSError, EOFError, SourceError, SinkError)
# How MariaDB writes the XID of an XA COMMIT or ROLLBACK: X'gtrid',X'bqual',formatID
XA_END = re.compile(
    r"XA\s+(COMMIT|ROLLBACK)\s+X'([0-9A-Fa-f]*)',\s*X'([0-9A-Fa-f]*)',\s*(\d+)", re.IGNORECASE
)
Xid = tuple[int, bytes, bytes]


@dataclass
class FollowTotals:
    """What one `follow` process did, for its caller and the metrics file."""

    events: int = 0  # rows of watched tables
    invalidated: int = 0  # product ids invalidated (with repeats across batches)
    deleted: int = 0  # cached listings those invalidations removed
    rewarmed: int = 0
    batches: int = 0
    reconnects: int = 0
    position: Position | None = None
    # Reported misses its drain thread filled (misses.draining), while misses.enabled.
    misses: MissCounts = field(default_factory=MissCounts)


def require_mapping(settings: Settings) -> None:
    """`follow` with nothing to follow is a config error, not an idle daemon."""
    f = settings.follow
    if not f.tables and not f.queries:
        raise ConfigError(f"{settings.source}: [follow] sets neither tables nor queries")
    for table, query in f.queries.items():
        if "%(ids)s" not in query:
            raise ConfigError(f"{settings.source}: [follow] queries.{table} must contain %(ids)s")


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT ask the follower to stop after its current batch.

    The follower sees the request within `max_delay` (the server's heartbeat period),
    applies what it has read, saves its checkpoint and returns.
    """

    def request_stop(signum: int, _: FrameType | None) -> None:
        log.info("follow.stopping", signal=signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, request_stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def follow(
    settings: Settings,
    *,
    from_now: bool = False,
    resync: bool = False,
    rewarm: bool | None = None,
    stop: threading.Event | None = None,
) -> FollowTotals:
    """Follow the binlog until `stop` is set; returns once the last batch is checkpointed.

    Start from the checkpoint; with `from_now` (first start only) or `resync` from the
    end of the binlog. `rewarm` (default `[follow] rewarm`) refills listings instead of
    only deleting them.
    """
    require_mapping(settings)
    if rewarm if rewarm is not None else settings.follow.rewarm:
        require_queries(settings)
    follower = _Follower(
        settings,
        rewarm=settings.follow.rewarm if rewarm is None else rewarm,
        stop=stop or threading.Event(),
    )
    path = lockfile(settings)
    ensure_private_dir(path.parent, f"follow lockfile {path}")
    # one follower per checkpoint; it runs until stopped, so it has no deadline to be stuck past
    with lock.file_lock(path, follower.record.run_id, max_seconds=None):
        try:
            follower.start(from_now=from_now, resync=resync)
            with misses.draining(settings, follower.totals.misses):  # in a thread of their own
                follower.run()
            follower.write_metrics()  # with all the drain did: its thread has stopped
        except CachewarmError as exc:
            follower.record_error(str(exc))
            raise
        finally:
            follower.close()
    return follower.totals


class _Follower:
    def __init__(self, settings: Settings, *, rewarm: bool, stop: threading.Event) -> None:
        self.settings = settings
        self.rewarm = rewarm
        self.stop = stop
        self.keys = Keys(settings.keys.prefix, settings.keys.version)
        self.where = describe(settings.redis)
        self.path = settings.follow_checkpoint
        self.columns = dict(settings.follow.tables)
        self.queries = dict(settings.follow.queries)
        self.tables = sorted({*self.columns, *self.queries})
        self.schema = server.schema(settings)
        self.primary: dict[str, str] = {}
        self.parents: dict[str, str] = {}  # tables cascading into watched ones -> their key
        self.prepared: dict[Xid, Batch] = {}  # XA transactions read up to PREPARE
        self.again: list[tuple[float, list[int], str]] = []  # (due, ids, everything) to repeat
        self.totals = FollowTotals()
        self.record = RunRecord(run_id=secrets.token_hex(6), command="follow")
        self.log = log.bind(run_id=self.record.run_id, command="follow")
        self.ctl: server.Control | None = None
        self.client: Client | None = None
        self.src: source.Source | None = None
        self.server_id = 0
        self.saved: Position | None = None
        self.saved_at = 0.0
        self.gtid = ""
        self.last_event_at = 0.0
        self.lag_s = 0.0
        self.last_error: str | None = None
        self.last_error_at = 0.0
        self.last_change: str | None = None
        self.last_change_at = 0.0

    # --- start-up -----------------------------------------------------------------------

    def start(self, *, from_now: bool, resync: bool) -> None:
        ensure_private_dir(self.path.parent, f"follow checkpoint {self.path}")
        state = load_state(self.path)
        self.ctl = server.Control(self.settings)
        self.primary = server.check_preconditions(
            self.ctl, self.settings, self.columns, self.queries
        )
        self.parents = server.cascading_parents(self.ctl, self.settings, self.tables)
        self.tables = sorted({*self.tables, *self.parents})
        self.server_id = self.ctl.server_id()
        self.client = connect(self.settings.redis)
        if self.queries:
            self.src = source.Source(self.settings.mysql)
            for table, query in self.queries.items():  # a broken one fails now, not mid-stream
                try:
                    self.src.ids_for(query, [0])
                except SourceError as exc:
                    raise SourceError(f"[follow] queries.{table}: {exc}") from None
        if resync:
            position = self.ctl.current()
            self._resync()
        elif from_now:
            if state is not None:
                raise ConfigError(
                    f"follow checkpoint {self.path} exists; --from-now would skip the changes "
                    "since it: drop the flag, or use --resync"
                )
            position = self.ctl.current()
        elif state is None:
            raise ConfigError(
                f"no follow checkpoint at {self.path}: start with --from-now the first time, "
                "or --resync to invalidate everything cached and start from now"
            )
        else:
            position = Position(**state["position"])
            if state.get("server_id") != self.server_id:
                raise LostPosition(
                    f"follow checkpoint {self.path} is from MySQL server_id "
                    f"{state.get('server_id')}, {self.ctl.where} is server_id {self.server_id}: "
                    "its binlog positions differ; run `cachewarm follow --resync`"
                )
            self.ctl.check_available(position)
            self.last_error = state.get("last_error")
            self.last_error_at = state.get("last_error_at", 0.0)
            self.last_change = state.get("last_change")
            self.last_change_at = state.get("last_change_at", 0.0)
        self.gtid = position.gtid
        self._save(position)
        self.log.info(
            "follow.started",
            position=str(position),
            gtid=position.gtid,
            server_id=server.server_id(self.settings),
            tables=self.tables,
            cascading=self.parents,
            rewarm=self.rewarm,
        )

    def _resync(self) -> None:
        """Invalidate every cached listing while holding the warm lock.

        Under the lock no warm is in flight, so none can write back a value read before
        the changes this follower missed; every later warm reads after them. The
        invalidation replaces the slot states too, so an `invalidate --rewarm` racing
        this composes with the usual guard.
        """
        client = self.client
        assert client is not None
        give_up = time.monotonic() + self.settings.run.max_seconds + self.settings.run.lock_ttl
        while True:
            try:
                with lock.run_lock(
                    self.settings, self.record.run_id, lambda: contextlib.nullcontext(client)
                ):
                    ids = [
                        self.keys.product_id(k.decode())
                        for k in client.scan_iter(self.keys.product_pattern, RESYNC_SCAN)
                    ]
                    self._invalidate(ids)
                break
            except LockHeld:
                if time.monotonic() > give_up or self.stop.wait(1.0):
                    raise
        self.log.warning("follow.resync", invalidated=len(ids))

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        """Stream until stopped; reconnect with backoff while an outage lasts."""
        outage_since: float | None = None
        backoff = 0.5
        while not self.stop.is_set():
            try:
                self._stream()
                return
            except _DISCONNECTS as exc:
                if server.is_lost_position(exc):
                    raise LostPosition(
                        f"MySQL cannot send the binlog from {self.saved} ({source.describe(exc)}); "
                        "changes since then may be missed: run `cachewarm follow --resync`"
                    ) from None
                message = exc_line(exc)
                now = time.time()  # the clock saved_at is on
                if outage_since is None or self.saved_at > outage_since:
                    outage_since, backoff = now, 0.5  # new: the last one ended in a checkpoint
                limit = self.settings.follow.max_outage
                if now - outage_since > limit:
                    failed = SinkError if isinstance(exc, SinkError) else SourceError
                    raise failed(
                        f"gave up after {limit:g} s ([follow] max_outage): {message}"
                    ) from None
                self.totals.reconnects += 1
                self.record_error(message)
                self.log.warning("follow.disconnected", error=message, retry_in_s=backoff)
                self._drop_connections()
                if self.stop.wait(backoff):
                    return
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _stream(self) -> None:
        assert self.saved is not None
        if self.client is None:
            self.client = connect(self.settings.redis)
        reader, stream = server.events(self.settings, self.saved, self.tables)
        batch = Batch(self.saved)
        xa: Batch | None = None  # the rows of an XA transaction, until its PREPARE
        opened = ""
        delay, most = self.settings.follow.max_delay, self.settings.follow.max_batch
        wanted, totals = Rows(self.columns, self.primary, self.parents), self.totals
        try:
            for event in stream:
                kind = type(event)
                if kind in server.ROW_EVENTS:
                    if not batch:
                        batch.started = time.monotonic()
                    totals.events += collect(event, wanted, batch if xa is None else xa)
                    self.last_event_at, self.lag_s = event.timestamp, time.time() - event.timestamp
                    continue
                if kind is MariadbGtidEvent:
                    opened = event.gtid
                    xa = Batch(batch.safe) if event.flags & server.FL_PREPARED_XA else None
                    continue
                if kind is QueryEvent:
                    query = event.query
                    if query == "BEGIN" or (xa is not None and query.startswith("XA END")):
                        continue  # inside a transaction: no place to resume from
                    self._statement(event, batch)
                elif kind is XAPrepareEvent:
                    if xa is not None:  # invalidated now, and again at its COMMIT
                        batch.add(xa)
                        self.prepared[event.xid_format_id, event.xid_gtrid, event.xid_bqual] = xa
                    xa = None
                elif kind is NotImplementedEvent:
                    self._unknown(event)
                    continue
                if kind is HeartbeatLogEvent:
                    self.lag_s = 0.0  # sent only when the server has nothing more to send
                else:  # Xid, COMMIT, XA, DDL or rotation: a transaction boundary to resume from
                    self.gtid = opened or self.gtid
                    batch.safe = Position(reader.log_file, reader.log_pos, self.gtid)
                if self.again and self.again[0][0] <= time.monotonic():
                    self._repeat()
                stopping = self.stop.is_set()
                if batch and (
                    stopping
                    or kind is HeartbeatLogEvent
                    or len(batch.ids) >= most
                    or time.monotonic() - batch.started >= delay
                ):
                    self._flush(batch)
                    batch = Batch(batch.safe)
                elif not batch:
                    self._maybe_save(batch.safe, now=stopping)
                if stopping:
                    self._repeat(wait=True)
                    return
            raise EOFError(f"{self.ctl.where if self.ctl else 'MySQL'} ended the binlog stream")
        finally:
            with contextlib.suppress(Exception):  # a dead connection has nothing to close
                reader.close()

    def _statement(self, event: Any, batch: Batch) -> None:
        """A statement in the binlog: DDL of a watched table, DML without rows, XA's end."""
        query: str = event.query
        if query[:3].upper() == "XA ":
            ended = XA_END.match(query)
            if ended:
                verb, gtrid, bqual, fmt = ended.groups()
                xid = (int(fmt), bytes.fromhex(gtrid), bytes.fromhex(bqual))
                prepared = self.prepared.pop(xid, None)
                if verb.upper() == "COMMIT":
                    if prepared is not None:
                        batch.add(prepared)
                    else:  # prepared before this process read the binlog: its rows are unknown
                        self._changed(batch, f"XA COMMIT of {query[10:].strip()}", "unknown rows")
            return
        default = event.schema.decode() if isinstance(event.schema, bytes) else event.schema
        found = statements.classify(query, default, self.schema, self.tables)
        if found.kind == "ddl":
            self._changed(batch, found.verb, found.table)
        elif found.kind == "dml":
            raise BinlogUnfit(
                f"{found.verb} of {found.table} was written to the binlog as a statement, "
                "without its rows: binlog_format was set to STATEMENT or MIXED (globally or in "
                "a session) while following; set binlog_format=ROW, then run "
                "`cachewarm follow --resync` (the follower stops before it)"
            )

    def _changed(self, batch: Batch, verb: str, table: str) -> None:
        """A change without row events: every listing goes, said once, kept in the status."""
        what = f"{verb} of {table}" if table != "unknown rows" else verb
        batch.everything = what
        self.last_change, self.last_change_at = what, time.time()
        self.log.warning("follow.table_changed", change=what)

    def _unknown(self, event: Any) -> None:
        if event.event_type in server.COMPRESSED_EVENTS:
            raise BinlogUnfit(
                f"a compressed binlog event (type {event.event_type}) follows: "
                "log_bin_compress was set ON while following, and the follower cannot read "
                "compressed events; set log_bin_compress=OFF, then run "
                "`cachewarm follow --resync` (the follower stops before it)"
            )

    def _repeat(self, *, wait: bool = False) -> None:
        """Invalidate again what was invalidated `reinvalidate_after` seconds ago (or, with
        `wait`, on the way out: everything still due, once its time has come)."""
        if not self.again:
            return
        now = time.monotonic()
        if wait:
            time.sleep(max(0.0, self.again[-1][0] - now))  # at most reinvalidate_after
            now = time.monotonic()
        ids: set[int] = set()
        everything = ""
        while self.again and self.again[0][0] <= now:
            _, some, why = self.again.pop(0)
            ids.update(some)
            everything = everything or why
        if everything:
            self._invalidate_everything()
        else:
            self._invalidate(sorted(ids))

    def _maybe_save(self, position: Position, *, now: bool = False) -> None:
        """Move an idle follower's checkpoint on now and then, and keep its status fresh."""
        wait = 1.0 if position != self.saved else IDLE_SAVE_S
        if now or time.time() - self.saved_at > wait:
            self._save(position)

    def _flush(self, batch: Batch) -> None:
        """Apply a batch, then checkpoint the boundary it was read up to."""
        ids = batch.ids
        if batch.everything:
            ids = set()
            self._invalidate_everything()
        else:
            for table, keys in batch.keyed.items():
                if self.src is None:
                    self.src = source.Source(self.settings.mysql)
                ids |= self.src.ids_for(self.queries[table], sorted(keys))
            self._invalidate(sorted(ids))
        self._save(batch.safe)
        later = self.settings.follow.reinvalidate_after
        if later and (ids or batch.everything):
            self.again.append((time.monotonic() + later, sorted(ids), batch.everything))
        if ids:
            self.log.debug(
                "follow.batch", ids=len(ids), position=str(batch.safe), lag_s=round(self.lag_s, 1)
            )

    def _invalidate_everything(self) -> None:
        """Every cached listing, through the guard: fresh states for every slot first, so
        no warm in flight writes a listing it read before; then every cached one goes."""
        assert self.client is not None
        pipe = ScriptPipe(self.client, where=self.where)
        try:
            renew_states(pipe, self.keys)
        finally:
            pipe.close()
        self._invalidate(
            [
                self.keys.product_id(k.decode())
                for k in self.client.scan_iter(self.keys.product_pattern, RESYNC_SCAN)
            ]
        )

    def _invalidate(self, ids: list[int]) -> None:
        """The one place follow changes Redis: the guarded invalidation, then the refill."""
        assert self.client is not None
        if not ids:
            return
        pipe = ScriptPipe(self.client, where=self.where)
        try:
            states, deleted = invalidate(pipe, self.keys, ids, batch=self.settings.warm.batch_size)
            self.totals.invalidated += len(ids)
            self.totals.deleted += deleted
            self.totals.batches += 1
            if self.rewarm:
                if self.src is None:
                    self.src = source.Source(self.settings.mysql)
                rewarmed, _ = refill(
                    self.settings, self.client, pipe, self.src, ids, states, self.record
                )
                self.totals.rewarmed += rewarmed
        finally:
            pipe.close()

    # --- state ---------------------------------------------------------------------------

    def _save(self, position: Position) -> None:
        self.saved, self.saved_at = position, time.time()
        self.totals.position = position
        save_state(self.path, self._state())
        self.write_metrics()

    def _state(self) -> dict[str, Any]:
        position = self.saved
        return {
            "position": None if position is None else position.__dict__,
            "server_id": self.server_id,
            "saved_at": self.saved_at,
            "last_event_at": self.last_event_at,
            "lag_s": round(self.lag_s, 3),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_change": self.last_change,
            "last_change_at": self.last_change_at,
            "events": self.totals.events,
            "invalidated": self.totals.invalidated,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    def record_error(self, message: str) -> None:
        """Keep the last error in the status file, beside the (unchanged) checkpoint."""
        self.last_error, self.last_error_at = message, time.time()
        with contextlib.suppress(OSError, CachewarmError):
            state = self._state() if self.saved is not None else load_state(self.path)
            if state is not None:
                state["last_error"], state["last_error_at"] = message, self.last_error_at
                save_state(self.path, state)

    def write_metrics(self) -> None:
        """Replace `[follow] metrics_textfile`, when set, with what this process did."""
        if not self.settings.follow.metrics_textfile:
            return
        labels = {"prefix": self.settings.keys.prefix, "version": str(self.settings.keys.version)}
        gauges: list[tuple[str, str, float]] = [
            ("cachewarm_follow_lag_seconds", "Binlog lag of the follower.", self.lag_s),
            (
                "cachewarm_follow_checkpoint_timestamp_seconds",
                "When the follower last saved its checkpoint.",
                self.saved_at,
            ),
            (
                "cachewarm_follow_events_total",
                "Row events of watched tables read since the follower started.",
                self.totals.events,
            ),
            (
                "cachewarm_follow_invalidations_total",
                "Product ids invalidated since the follower started.",
                self.totals.invalidated,
            ),
        ]
        if misses.enabled(self.settings):
            drained = self.totals.misses
            gauges += [
                (
                    "cachewarm_follow_miss_filled_total",
                    "Listings the follower wrote or found current for misses readers "
                    "reported, since it started.",
                    drained.filled,
                ),
                (
                    "cachewarm_follow_miss_invalid_total",
                    "Reported misses the follower dropped since it started: the entry "
                    "named no product id.",
                    drained.invalid,
                ),
                (
                    "cachewarm_follow_miss_absent_total",
                    "Reported product ids the follower found no listing row for, since it started.",
                    drained.absent,
                ),
                (
                    "cachewarm_follow_miss_queue_length",
                    "Reported misses still in the stream (not yet filled and acknowledged) "
                    "at the follower's last look, once a second.",
                    drained.queued,
                ),
            ]
        try:
            metrics.write_gauges(Path(self.settings.follow.metrics_textfile), labels, gauges)
        except OSError as exc:
            self.log.warning(
                "metrics.unwritable", path=self.settings.follow.metrics_textfile, error=str(exc)
            )

    def _drop_connections(self) -> None:
        for closer in (self.client, self.src):
            if closer is not None:
                with contextlib.suppress(Exception):  # already broken: nothing to release
                    closer.close()
        self.client = self.src = None

    def close(self) -> None:
        self._drop_connections()
        if self.ctl is not None:
            with contextlib.suppress(pymysql.MySQLError):
                self.ctl.close()


def exc_line(exc: BaseException) -> str:
    """One line for a driver, socket or cachewarm error."""
    if isinstance(exc, CachewarmError):
        return str(exc)
    if isinstance(exc, pymysql.MySQLError):
        return f"MySQL binlog stream failed: {source.describe(exc)}"
    return f"{type(exc).__name__}: {exc}"
