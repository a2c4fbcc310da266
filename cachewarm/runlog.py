"""The run log: one JSON line per invocation, so an operator can see what every run did.

`recording` wraps a whole command and writes exactly one record however it ends, then
hands the record to the caller's hooks (the metrics file). Each record is written with a
single O_APPEND write of a whole line on a freshly opened descriptor: concurrent runs
never interleave within a line, and a log that logrotate moved away is simply recreated
by the next record. A record is whole or absent: a short write (a full disk) is cut
back off, and a record never starts on a line something else left unfinished. A record
that cannot be written is a warning: the exit code says what the run did, not the disk.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from .errors import CachewarmError, DeadlineExceeded, FileAccessError, Interrupted, LockHeld
from .files import ensure_private_dir
from .keys import Keys
from .urls import scrub

log = structlog.get_logger("cachewarm")
Hook = Callable[["RunRecord"], None]

HOT_IDS_LOGGED = 100  # a run's first hot ids; the full list can be millions long
# A dry run does none of what its counts describe; its record and events say so.
DRY_RUN_NAMES = {"written": "would_write", "removed": "would_remove"}

RunStatus = Literal["running", "ok", "empty", "failed", "skipped", "dry-run", "interrupted"]
WarmMode = Literal["full", "incremental"]


@dataclass
class RunRecord:
    run_id: str
    command: str
    status: RunStatus = "running"  # empty: no hot ids
    mode: WarmMode = "full"
    stage: str = "starting"  # what the run was doing; names what hung or was interrupted
    started_at: str = ""
    ended_at: str = ""
    duration_s: float = 0.0
    prefix: str = ""
    version: int = 0
    hot: int = 0
    hot_ids: list[int] = field(default_factory=list)
    read: int = 0
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped_invalidated: int = 0
    skipped_oversize: int = 0
    skipped_invalid_json: int = 0
    bytes: int = 0
    # The miss stream (cachewarm.misses): entries taken, listings written or confirmed,
    # entries that were no product id, ids without a listing row; entries left queued.
    miss_taken: int = 0
    miss_filled: int = 0
    miss_invalid: int = 0
    miss_absent: int = 0
    miss_queue: int = 0
    hot_published: bool = False
    error: str | None = None
    host: str = ""
    pid: int = 0

    def to_json(self) -> builtins.bytes:
        record = self._named(asdict(self))
        record["hot_ids"] = self.hot_ids[:HOT_IDS_LOGGED]
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    def counts(self) -> dict[str, int]:
        """What the run did to listings, as its run.finished event reports it."""
        return self._named(
            {"written": self.written, "unchanged": self.unchanged, "removed": self.removed}
        )

    def _named(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A dry run's counts are what a run would do: would_write, would_remove."""
        if self.command != "dry-run":
            return fields
        return {DRY_RUN_NAMES.get(name, name): value for name, value in fields.items()}


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextlib.contextmanager
def recording(
    path: Path,
    command: str,
    keys: Keys,
    *,
    secrets_: Sequence[str] = (),
    hooks: Sequence[Hook] = (),
) -> Iterator[RunRecord]:
    """Write exactly one run-log record for the block, whatever way it ends.

    The error kept in the record is scrubbed of `secrets_`; `hooks` see the finished
    record (after it is logged) and must not raise.
    """
    record = RunRecord(
        run_id=secrets.token_hex(6),
        command=command,
        started_at=utc_now(),
        prefix=keys.prefix,
        version=keys.version,
        host=socket.gethostname(),
        pid=os.getpid(),
    )
    check_writable(path)
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
        record.ended_at = utc_now()
        record.duration_s = round(time.monotonic() - started, 3)
        record.error = record.error and scrub(record.error, secrets_)
        try:
            append(path, record)
        except (OSError, FileAccessError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.warning("runlog.unwritable", path=str(path), run_id=record.run_id, error=reason)
        for hook in hooks:
            hook(record)
        bound.info(
            "run.finished",
            status=record.status,
            duration_s=record.duration_s,
            hot=record.hot,
            **record.counts(),
            error=record.error,
        )


OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def check_writable(path: Path) -> None:
    """Fail before any work if the record could never be written afterwards.

    A full disk is not such a case: it may have room again by the end, and the run
    itself needs none; if it has not, the record is a warning then.
    """
    ensure_private_dir(path.parent, f"run log {path}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno in OUT_OF_SPACE:
            return
        raise FileAccessError(f"run log {path} is not writable: {exc.strerror}") from None
    os.close(fd)


def append(path: Path, record: RunRecord) -> None:
    """Append one record as a whole line, or leave the file as it was (OSError)."""
    data = record.to_json()
    ensure_private_dir(path.parent, f"run log {path}")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        # Another process's append can be half done while its size already shows (a record
        # across a page boundary), which would pass for a torn line: check and write alone.
        # Where flock fails (some network filesystems) the record still goes in, unlocked:
        # at worst a concurrent record gets a blank line before it, which readers skip.
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn line from a crash
            data = b"\n" + data
        written = os.write(fd, data)
        if written != len(data):
            _cut_back(fd, written)
            raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
    finally:
        os.close(fd)


def _cut_back(fd: int, written: int) -> None:
    """Remove the `written` bytes of a short O_APPEND write, just after it.

    After an O_APPEND write the offset is the end of what it wrote. Only if nothing was
    appended behind it since is the file cut; otherwise the fragment stays, on a line of
    its own once the next record starts with a newline, and `tail` passes over it.
    """
    end = os.lseek(fd, 0, os.SEEK_CUR)
    if os.fstat(fd).st_size == end:
        os.ftruncate(fd, end - written)


def tail(path: Path, count: int) -> list[dict[str, Any]]:
    """The last `count` records, newest last; unreadable lines are passed over."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            chunk = 64 * 1024
            data = b""
            while size > 0 and data.count(b"\n") <= count:
                step = min(chunk, size)
                size -= step
                f.seek(size)
                data = f.read(step) + data
    except FileNotFoundError:
        return []
    records = []
    for line in data.splitlines()[-count - 1 :]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records[-count:]
