"""Prometheus textfile-collector metrics, for alerting on a cron job that stopped working.

`cachewarm_last_success_timestamp_seconds` moves only when a run succeeds, so one alert
on its age catches every failure mode at once: errors, skipped runs, hangs, and a
crontab line that no longer runs at all. Every series is there from the first run: the
last success is 0 until a run succeeds, so the same alert fires for a deployment that
never succeeded, instead of finding no series to alert on. The file is replaced
atomically (temp file in the same directory, then rename), so the collector never reads
half a file.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from .runlog import RunRecord, RunStatus

log = structlog.get_logger("cachewarm")

STATUSES: tuple[RunStatus, ...] = ("ok", "empty", "failed", "skipped", "interrupted")
LAST_SUCCESS = "cachewarm_last_success_timestamp_seconds"


def _previous_success(path: Path) -> float | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    found = re.search(rf"^{LAST_SUCCESS}{{[^}}]*}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def _number(value: float) -> str:
    """Exact sample value: '{:g}' keeps 6 digits, turning a timestamp into 1.79584e+09."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(record: RunRecord, now: float, last_success: float | None) -> str:
    labels = f'prefix="{record.prefix}",version="{record.version}"'
    gauges: list[tuple[str, str, str, float]] = [
        ("cachewarm_last_run_timestamp_seconds", "When the last run ended.", labels, now),
        (
            "cachewarm_last_run_duration_seconds",
            "How long the last run took.",
            labels,
            record.duration_s,
        ),
        ("cachewarm_last_run_hot_ids", "Hot ids the last run selected.", labels, record.hot),
        (
            "cachewarm_last_run_listings_written",
            "Listings the last run rewrote.",
            labels,
            record.written,
        ),
        (
            "cachewarm_last_run_listings_unchanged",
            "Listings the last run found unchanged.",
            labels,
            record.unchanged,
        ),
        (
            "cachewarm_last_run_miss_filled",
            "Listings the last run wrote for misses readers reported.",
            labels,
            record.miss_filled,
        ),
        (
            "cachewarm_last_run_miss_invalid",
            "Reported misses the last run dropped: no product id.",
            labels,
            record.miss_invalid,
        ),
        (
            "cachewarm_last_run_miss_absent",
            "Reported misses the last run found no listing row for.",
            labels,
            record.miss_absent,
        ),
        (
            "cachewarm_miss_queue_length",
            "Reported misses still queued when the last run ended.",
            labels,
            record.miss_queue,
        ),
    ]
    lines = []
    for name, help_text, label_text, value in gauges:
        lines += [
            f"# HELP {name} {help_text}",
            f"# TYPE {name} gauge",
            f"{name}{{{label_text}}} {_number(value)}",
        ]
    name = "cachewarm_last_run_status"
    lines += [f"# HELP {name} 1 for the status of the last run.", f"# TYPE {name} gauge"]
    lines += [
        f'{name}{{{labels},status="{status}"}} {int(record.status == status)}'
        for status in STATUSES
    ]
    lines += [
        f"# HELP {LAST_SUCCESS} When a run last succeeded (0: never); alert on its age.",
        f"# TYPE {LAST_SUCCESS} gauge",
        f"{LAST_SUCCESS}{{{labels}}} {last_success or 0:.3f}",
    ]
    return "\n".join(lines) + "\n"


def write(path: Path, record: RunRecord) -> None:
    """Replace the metrics file; the last-success time carries over from the old file."""
    now = time.time()
    last_success = now if record.status == "ok" else _previous_success(path)
    _replace(path, render(record, now, last_success))


def write_gauges(path: Path, labels: dict[str, str], gauges: list[tuple[str, str, float]]) -> None:
    """Replace a file of (name, help, value) gauges: the follower's, beside the runs' file."""
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    lines = []
    for name, help_text, value in gauges:
        kind = "counter" if name.endswith("_total") else "gauge"
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines.append(f"{name}{{{label_text}}} {_number(value)}")
    _replace(path, "\n".join(lines) + "\n")


def _replace(path: Path, text: str) -> None:
    """Write `path` whole, creating its directory: `check` said it could be created.

    Readable by others, directory too: the textfile collector runs as another user.
    """
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def hook(path: Path) -> Callable[[RunRecord], None]:
    """A run-log hook that rewrites the metrics file; failing to is a warning, not a failure."""

    def write_metrics(record: RunRecord) -> None:
        try:
            write(path, record)
        except OSError as exc:
            log.warning("metrics.unwritable", path=str(path), error=str(exc))

    return write_metrics
