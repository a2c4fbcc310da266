"""One run at a time: a flock'd file on one host, or a fenced Redis lock across hosts.

flock, not a pidfile: the kernel drops the lock when the holder dies, even by kill -9,
so a stale lock cannot exist. The pid, host and start time written into the file are for
`status` and for the skipper; they never decide who holds the lock.

A run that finds the lock held skips (LockHeld, exit 75): normal while a long warm runs.
But a holder still there well past its own `max_seconds` (written into its holder info,
because the skipper's config may differ) cannot be a healthy run, since the run guard
stops every run at its deadline: that is LockStuck, an error someone must look at.
"""

from __future__ import annotations

import calendar
import contextlib
import errno
import fcntl
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.exceptions

from .errors import CachewarmError, LockError, LockHeld, LockStuck
from .files import ensure_private_dir


@dataclass(frozen=True)
class Fence:
    """What every write must prove: the lock token it holds (or none) and its deadline.

    The write scripts check both on Redis itself, so a run that lost its lock or
    overran its deadline cannot write, whatever its own clock or state says.
    """

    lock_key: str
    token: str = ""
    deadline_ms: int = 0


ACQUIRE_PATIENCE_S = 0.5  # rides out a `status` peeking at the lock, still well under 1 s
# Past its deadline a holder still cleans up (releases, writes its run-log line), and
# hosts sharing a Redis lock may disagree a little about the time.
STUCK_MARGIN_S = 60.0

EXTEND_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def holder_info(run_id: str, max_seconds: float | None) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "max_seconds": max_seconds,
    }


def overdue_s(info: dict[str, Any] | None) -> float | None:
    """Seconds the holder is past its deadline plus STUCK_MARGIN_S, or None if it is not.

    Holder info without a start or a deadline (an older version's, or garbage) is never
    called stuck: only a holder that says how long it may take can be past it.
    """
    if not info:
        return None
    try:
        started = calendar.timegm(time.strptime(str(info["started_at"]), "%Y-%m-%dT%H:%M:%SZ"))
        allowed = float(info["max_seconds"]) + STUCK_MARGIN_S
    except (KeyError, TypeError, ValueError):
        return None
    late = time.time() - started - allowed
    return late if late > 0 else None


def held(what: str, info: dict[str, Any] | None) -> CachewarmError:
    """The error for finding `what` held: a skip, or LockStuck past the holder's deadline."""
    late = overdue_s(info)
    if late is None or not info:
        return LockHeld(f"{what} is held by {describe_holder(info)}")
    return LockStuck(
        f"{what} is held by {describe_holder(info)}, {late + STUCK_MARGIN_S:.0f} s past its "
        f"max_seconds ({float(info['max_seconds']):g} s): that run looks stuck; check the "
        "process, stop it if needed"
    )


def describe_holder(info: dict[str, Any] | None) -> str:
    if not info:
        return "another run"
    return (
        f"run {info.get('run_id', '?')} (pid {info.get('pid', '?')} on "
        f"{info.get('host', '?')}, since {info.get('started_at', '?')})"
    )


def _open_lockfile(path: Path, flags: int) -> int:
    """Open without following symlinks, so nobody can point our lock at their file."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LockError(f"lockfile {path} is a symlink; refusing to use it") from None
        raise LockError(f"cannot open lockfile {path}: {exc.strerror}") from None


def _read_info(fd: int) -> dict[str, Any] | None:
    try:
        data = os.pread(fd, 4096, 0)
        info = json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return None  # garbage from an old run: informational only
    return info if isinstance(info, dict) else None


@contextlib.contextmanager
def file_lock(path: Path, run_id: str, *, max_seconds: float | None) -> Iterator[Fence]:
    """Hold an exclusive flock on `path` for the duration of the block."""
    ensure_private_dir(path.parent, f"lockfile {path}")
    fd = _open_lockfile(path, os.O_RDWR | os.O_CREAT)
    try:
        give_up = time.monotonic() + ACQUIRE_PATIENCE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise LockError(
                        f"cannot lock {path}: {exc.strerror} (does this filesystem support flock?)"
                    ) from None
                if time.monotonic() >= give_up:
                    raise held(f"lock {path}", _read_info(fd)) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):  # for `status` only: a full disk must not stop the run
            os.pwrite(fd, json.dumps(holder_info(run_id, max_seconds)).encode() + b"\n", 0)
        try:
            yield Fence(lock_key="")
        finally:  # however the run ended: no stale holder left for a reader of the file
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing drops the flock


def file_lock_holder(path: Path) -> dict[str, Any] | None:
    """Who holds the lock now, or None. Peeks with a shared lock, never blocks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_info(fd) or {}
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def redis_lock(
    client: redis.Redis, key: str, run_id: str, *, ttl_s: float, max_seconds: float
) -> Iterator[Fence]:
    """SET NX with a unique token, renewed in the background while the run lives.

    If renewal stops (the process was paused past the TTL) and another host takes the
    lock, this run's writes are refused by the token check in every write script.
    """
    token = json.dumps({**holder_info(run_id, max_seconds), "token": secrets.token_hex(16)})
    ttl_ms = int(ttl_s * 1000)
    if not client.set(key, token, nx=True, px=ttl_ms):
        raise held(f"Redis lock {key}", redis_lock_holder(client, key))
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_s / 3):
            try:
                if not client.eval(EXTEND_SCRIPT, 1, key, token, ttl_ms):
                    return  # lost; the fence will stop our writes
            except redis.exceptions.RedisError:
                continue  # transient: try again next period, the fence still protects

    renewer = threading.Thread(target=renew, name="cachewarm-lock-renewal", daemon=True)
    renewer.start()
    try:
        yield Fence(lock_key=key, token=token)
    finally:
        stop.set()
        renewer.join()
        with contextlib.suppress(redis.exceptions.RedisError):
            client.eval(RELEASE_SCRIPT, 1, key, token)


def redis_lock_holder(client: redis.Redis, key: str) -> dict[str, Any] | None:
    raw = client.get(key)
    if raw is None:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        return {}
    if isinstance(info, dict):
        info.pop("token", None)
        return info
    return {}
