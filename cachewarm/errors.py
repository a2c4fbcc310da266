"""Every failure cachewarm reports, each with the exit code cron and scripts see.

Messages are one line and name the thing that failed (server, key, file) so the
on-call engineer knows where to look without a traceback.
"""

from __future__ import annotations

EX_FAILED = 1
EX_USAGE = 2
EX_TEMPFAIL = 75  # sysexits.h: "try again later", the cron-friendly code for a held lock


class CachewarmError(Exception):
    """Base class: the run failed; the message is the one line an operator reads."""

    exit_code = EX_FAILED


class ConfigError(CachewarmError):
    """Bad configuration file, environment variable or flag."""

    exit_code = EX_USAGE


class UsageError(CachewarmError):
    """Bad command-line input such as a malformed product id."""

    exit_code = EX_USAGE


class LockHeld(CachewarmError):
    """Another run holds the lock; this one skipped without touching anything."""

    exit_code = EX_TEMPFAIL


class LockStuck(CachewarmError):
    """The lock's holder is long past its own deadline: not a skip, something is stuck."""


class LockError(CachewarmError):
    """The lock could not be taken for a reason other than another holder."""


class LockLost(CachewarmError):
    """The Redis lock expired or was taken over while this run was writing."""


class FileAccessError(CachewarmError):
    """A file cachewarm keeps (lockfile, run log, metrics) cannot be created or written."""


class SourceError(CachewarmError):
    """MySQL failed: unreachable, refused the login, or a query failed."""


class SinkError(CachewarmError):
    """Redis failed: unreachable, refused the login, or a write failed."""


class TooManyRejected(CachewarmError):
    """The run's own checks refused too much of the hot set: a config slip, not bad data."""


class DeadlineExceeded(CachewarmError):
    """The run passed `run.max_seconds`; stopped so a hung step cannot hold the lock."""


class Interrupted(CachewarmError):
    """SIGTERM or SIGINT arrived; the run stopped early."""

    def __init__(self, signal_name: str, exit_code: int) -> None:
        super().__init__(f"interrupted by {signal_name}")
        self.exit_code = exit_code


class BinlogUnfit(CachewarmError):
    """The server's binary log, or the follower's grants, cannot support `follow`."""

    exit_code = EX_USAGE


class LostPosition(CachewarmError):
    """The follower's checkpoint points at binlog the server no longer has."""
