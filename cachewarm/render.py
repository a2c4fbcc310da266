"""What the CLI prints for people: reports as text, and a progress bar on a terminal."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

import click

from . import lock
from .check import CheckReport
from .orchestrate import DryRunReport
from .pipeline import Progress
from .staleness import AuditReport
from .views import StatusReport


def dry_run(report: DryRunReport) -> None:
    r = report.record
    click.echo(f"dry run: nothing was written ({r.hot} hot ids, {r.read} listings read)")
    click.echo(
        f"  listings: {report.new} new, {report.changed} changed, {report.unchanged} unchanged, "
        f"{report.would_remove} to remove, {report.bytes} bytes"
    )
    click.echo(f"  hot list: {'would change' if report.hot_changed else 'unchanged'}")
    if m := report.misses:
        click.echo(
            f"  misses: {m.queued} queued; the run would take {m.would_take}: "
            f"{m.ids} product ids, {m.invalid} invalid, {m.absent} without a listing row"
        )
    for state, key, size in report.samples:
        click.echo(f"  {state:<8} {key} ({size} bytes)")


AUDIT_SHOWN_IDS = 10  # stale ids named in audit's summary line


def audit(report: AuditReport, *, fixing: bool) -> None:
    """One line; the verdict is the exit code, every stale id is in --json."""
    source = "cached listings" if report.hot_published else "listings (no hot list published)"
    line = (
        f"audit: {report.checked} {source} checked, {report.stale} stale, {report.missing} missing"
    )
    if report.stale_ids:
        shown = ", ".join(map(str, report.stale_ids[:AUDIT_SHOWN_IDS]))
        more = report.stale - AUDIT_SHOWN_IDS
        line += f"; stale ids {shown}" + (f" and {more} more" if more > 0 else "")
    if fixing:
        line += f"; fixed {report.fixed}"
    click.echo(line)


def check(report: CheckReport) -> None:
    """One line per finding; the verdict is the exit code."""
    for finding in report.findings:
        label = finding.status if finding.status == "ok" else finding.status.upper()
        click.echo(f"{label:<4} {finding.check}: {finding.message}")


def status(report: StatusReport) -> None:
    click.echo(f"cachewarm {report.prefix}:v{report.version}  (run log {report.runlog})")
    holder = report.lock
    if not report.lock_known:
        click.echo("lock: unknown (the Redis lock cannot be read while Redis is unreachable)")
    elif holder is None:
        click.echo("lock: free")
    else:
        late = report.lock_overdue_s
        stuck = "" if late is None else f", {lock.past_deadline(holder, late)}"
        click.echo(
            f"lock: held by run {holder.get('run_id', '?')}, pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')} since {holder.get('started_at', '?')}{stuck}"
        )
    hot = report.hot
    if hot:
        click.echo(
            f"hot list: {hot.size} ids, published {hot.published_at} "
            f"({hot.age_s:.0f} s ago) by run {hot.run_id}, expires in {hot.expires_in_s} s"
        )
    elif report.redis_error:
        click.echo(f"hot list: unknown ({report.redis_error})")
    else:
        click.echo("hot list: not published")
    if report.miss_queue is not None:
        click.echo(f"miss queue: {report.miss_queue} entries")
    if f := report.follower:
        running = f["running"]
        click.echo(
            f"follower: {'running, pid ' + str(running.get('pid')) if running else 'stopped'}, "
            f"at {f['position']['file']}:{f['position']['pos']}, "
            f"checkpoint {f['age_s']:.0f} s ago, lag {f['lag_s']:.1f} s, "
            f"last event {_utc(f['last_event_at'])}, last error: {f['last_error'] or 'none'}, "
            f"last table change: {_change(f)}"
        )
    click.echo("recent runs:" if report.runs else "recent runs: none recorded")
    for r in report.runs:
        written = (
            f"{r.get('would_write', 0)} would be written"
            if r.get("command") == "dry-run"
            else f"{r.get('written', 0)} written"
        )
        detail = r.get("error") or (
            f"{r.get('hot', 0)} hot, {written}, {r.get('unchanged', 0)} unchanged"
        )
        click.echo(
            f"  {r.get('started_at', '?')}  {r.get('command', '?'):<10} {r.get('status', '?'):<11} "
            f"{r.get('duration_s', 0):>8.2f}s  {detail}"
        )


@contextlib.contextmanager
def progress_bar(enabled: bool) -> Iterator[Progress | None]:
    """A bar on an interactive stderr only (and when `enabled`); cron gets none.

    The bar starts with the first batch (when the total is known) and closes itself at
    100%, so the events logged after it start on a line of their own.
    """
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    with contextlib.ExitStack() as stack:
        bars: list[Any] = []  # click's ProgressBar, made on the first batch

        def advance(done: int, total: int) -> None:
            if not bars:
                bar = click.progressbar(length=total, label="warming", file=sys.stderr)
                bars.append(bar)
                stack.enter_context(bar)
            bars[0].update(done)
            if bars[0].pos >= total:
                stack.close()

        yield advance


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp)) if timestamp else "none"


def _change(follower: dict[str, Any]) -> str:
    """The follower's last change without row events (a DDL, say), and when."""
    change = follower.get("last_change")
    return f"{change} at {_utc(follower.get('last_change_at', 0.0))}" if change else "none"
