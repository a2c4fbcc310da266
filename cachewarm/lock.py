"""One run at a time: a flock'd file on one host, or a fenced Redis lock across hosts.

flock, not a pidfile: the kernel drops the lock when the holder dies, even by kill -9,
so a stale lock cannot exist. The pid, host and start time written into the file are for
`status` and for the skipper; they never decide who holds the lock.

A run that finds the lock held skips (LockHeld, exit 75): normal while a long warm runs.
But a holder still there well past its own `max_seconds` (written into its holder info,
because the skipper's config may differ) cannot be a healthy run, since the run guard
stops every run at its deadline: that is LockStuck, an error someone must look at.

How long a holder has held is never told by the wall clock, which a stepped clock (or
another host's) would skew into calling a healthy holder stuck: the Redis lock is timed
on its node's clock (the acquire script stamps `started_ms`), the file lock, which only
this host can hold, on the time since boot (/proc/uptime, which no step moves).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.exceptions
from redis.cluster import RedisCluster

from .config import Settings
from .errors import CachewarmError, LockError, LockHeld, LockStuck
from .files import ensure_private_dir

RedisClient = redis.Redis | RedisCluster


@dataclass
class Lease:
    """Until when (ms, on the lock's Redis clock) the Redis lock is surely still ours.

    Renewal moves it forward. It is what fences writes on nodes that cannot read the
    lock key (a Redis Cluster's other slots): past it, no write script accepts ours.
    """

    until_ms: int = 0


@dataclass(frozen=True)
class Fence:
    """What every write must prove: the lock token it holds (or none) and its deadline.

    The write scripts check them on Redis itself, so a run that lost its lock or
    overran its deadline cannot write, whatever its own clock or state says. The token
    is checked where the script can read the lock key (one Redis), the lease everywhere.
    """

    lock_key: str
    token: str = ""
    deadline_ms: int = 0
    lease: Lease | None = None


ACQUIRE_PATIENCE_S = 0.5  # rides out a `status` peeking at the lock, still well under 1 s
# Past its deadline a holder still cleans up (releases, writes its run-log line), and
# hosts sharing a Redis lock may disagree a little about the time.
STUCK_MARGIN_S = 60.0

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
UPTIME = Path("/proc/uptime")

# The lock node's clock (ms). ACQUIRE: KEYS[1] the lock, ARGV[1] the holder's JSON
# object, ARGV[2] the TTL (ms). It stores that object with `started_ms` (this clock)
# added and returns {stored value, now}, or {0, now} when the lock is held; the stored
# value is the token. EXTEND returns the clock when it extended, or 0: the lease then
# runs from a time no later than the key's. CLOCK (KEYS[1] routes it) returns the clock.
_NOW_MS = "local t = redis.call('TIME')\nlocal now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
ACQUIRE_SCRIPT = (
    _NOW_MS
    + """
local value = string.sub(ARGV[1], 1, -2) .. ',"started_ms":' .. string.format('%d', now) .. '}'
if redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[2]) then return {value, now} end
return {0, now}
"""
)
CLOCK_SCRIPT = _NOW_MS + "return now\n"
EXTEND_SCRIPT = (
    _NOW_MS
    + """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return now
end
return 0
"""
)
# Kept off the lease's end so a node whose clock runs a little behind the lock's
# still refuses a paused run before another host can take the lock.
LEASE_MARGIN_MS = 1000
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _boot() -> tuple[str, float]:
    """This host's boot, and seconds since it: a clock that no step of the wall clock moves.

    /proc/uptime is the kernel's CLOCK_BOOTTIME, read as a file, so that a library
    preloaded to fake the time (faketime, in the tests that step the clock) leaves it be.
    Without /proc: no boot id, and so no holder is ever called stuck by this clock.
    """
    try:
        boot_id = BOOT_ID.read_text().strip()
        uptime = float(UPTIME.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return "", 0.0
    return boot_id, uptime


def holder_info(run_id: str, max_seconds: float | None) -> dict[str, Any]:
    """Who holds the lock: `started_at` for people, `boot_id`/`boot_s` to time it by."""
    boot_id, boot_s = _boot()
    return {
        "run_id": run_id,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "max_seconds": max_seconds,
        "boot_id": boot_id,
        "boot_s": round(boot_s, 3),
    }


def overdue_s(info: dict[str, Any] | None, *, redis_now_ms: int | None = None) -> float | None:
    """Seconds the holder is past its deadline plus STUCK_MARGIN_S, or None if it is not.

    Its age is the lock node's clock (`redis_now_ms`) less the `started_ms` the acquire
    script stamped, or else, for a holder that booted with this host, the time since
    boot less its `boot_s`. Holder info giving neither, or no deadline (an older
    version's, another host's file lock, garbage), is never called stuck: only a holder
    whose age can be told on a clock that no step skews can be past its deadline.
    """
    if not info:
        return None
    try:
        allowed = float(info["max_seconds"]) + STUCK_MARGIN_S
        if redis_now_ms is not None and "started_ms" in info:
            age = (redis_now_ms - int(info["started_ms"])) / 1000
        else:
            boot_id, boot_s = _boot()
            if not boot_id or info.get("boot_id") != boot_id:
                return None
            age = boot_s - float(info["boot_s"])
    except (KeyError, TypeError, ValueError):
        return None
    late = age - allowed
    return late if late > 0 else None


def held(
    what: str, info: dict[str, Any] | None, *, redis_now_ms: int | None = None
) -> CachewarmError:
    """The error for finding `what` held: a skip, or LockStuck past the holder's deadline."""
    late = overdue_s(info, redis_now_ms=redis_now_ms)
    if late is None or not info:
        return LockHeld(f"{what} is held by {describe_holder(info)}")
    return LockStuck(
        f"{what} is held by {describe_holder(info)}, {past_deadline(info, late)}; check the "
        "process, stop it if needed"
    )


def past_deadline(info: dict[str, Any], late: float) -> str:
    """How far a stuck holder is past its deadline (`late` from overdue_s), in words."""
    return (
        f"{late + STUCK_MARGIN_S:.0f} s past its max_seconds "
        f"({float(info['max_seconds']):g} s): that run looks stuck"
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
    client: RedisClient,
    key: str,
    run_id: str,
    *,
    ttl_s: float,
    max_seconds: float,
) -> Iterator[Fence]:
    """SET NX with a unique token, renewed in the background while the run lives.

    If renewal stops (the process was paused past the TTL) and another host takes the
    lock, this run's writes are refused: by the token check where a script can read
    the lock, and everywhere by the lease, which ran out before the lock could.
    """
    holder = json.dumps({**holder_info(run_id, max_seconds), "token": secrets.token_hex(16)})
    ttl_ms = int(ttl_s * 1000)
    margin = min(LEASE_MARGIN_MS, ttl_ms // 4)
    stored, since = client.eval(ACQUIRE_SCRIPT, 1, key, holder, ttl_ms)
    if not stored:
        raise held(f"Redis lock {key}", redis_lock_holder(client, key), redis_now_ms=int(since))
    token = stored.decode() if isinstance(stored, bytes) else str(stored)
    lease = Lease(int(since) + ttl_ms - margin)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_s / 3):
            try:
                extended = int(client.eval(EXTEND_SCRIPT, 1, key, token, ttl_ms))
            except redis.exceptions.RedisError:
                continue  # transient: try again next period, the fence still protects
            if not extended:
                return  # lost; the fence will stop our writes
            lease.until_ms = extended + ttl_ms - margin

    renewer = threading.Thread(target=renew, name="cachewarm-lock-renewal", daemon=True)
    renewer.start()
    try:
        yield Fence(lock_key=key, token=token, lease=lease)
    finally:
        stop.set()
        renewer.join()
        with contextlib.suppress(redis.exceptions.RedisError):
            client.eval(RELEASE_SCRIPT, 1, key, token)


def redis_lock_clock_ms(client: RedisClient, key: str) -> int:
    """The clock of the node that holds `key`: what a Redis lock holder's age is told by."""
    return int(client.eval(CLOCK_SCRIPT, 1, key))


def redis_lock_holder(client: RedisClient, key: str) -> dict[str, Any] | None:
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


@contextlib.contextmanager
def run_lock(
    settings: Settings,
    run_id: str,
    redis_client: Callable[[], AbstractContextManager[RedisClient]],
    *,
    stage: Callable[[str], None] = lambda _: None,
) -> Iterator[tuple[RedisClient, Fence]]:
    """Hold the lock `run.lock` names, and the Redis client the run writes through.

    The one way a warm and `follow --resync` take the lock. The file lock is taken
    before `redis_client` is entered, so a run that finds it held skips without
    touching Redis; the Redis lock needs the client first. They are let go in reverse
    order. `stage` hears which lock is being taken, for the run log.
    """
    run = settings.run
    with contextlib.ExitStack() as stack:
        if run.lock == "file":
            stage(f"taking the lock {settings.lockfile}")
            fence = stack.enter_context(
                file_lock(settings.lockfile, run_id, max_seconds=run.max_seconds)
            )
        client = stack.enter_context(redis_client())
        if run.lock == "redis":
            stage(f"taking the Redis lock {settings.keys.lock}")
            fence = stack.enter_context(
                redis_lock(
                    client,
                    settings.keys.lock,
                    run_id,
                    ttl_s=run.lock_ttl,
                    max_seconds=run.max_seconds,
                )
            )
        yield client, fence
