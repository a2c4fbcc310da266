"""The run guard: a whole-run deadline and clean stops on signals, for any caller.

`warm()` already checks its deadline between batches and, on Redis' clock, in every
write script; what it cannot do alone is get out of a call that is blocked inside a
driver. The guard adds that backstop, for the CLI and Python callers alike:

    with cachewarm.run_guard(settings.run.max_seconds):
        cachewarm.warm(settings)

In the main thread it turns SIGTERM, SIGINT and SIGHUP into `Interrupted` and the
deadline (SIGALRM) into `DeadlineExceeded`. Handlers only run once the main thread is
back in Python, and mysqlclient waits for the server in C: so a watchdog thread, woken
through the signal wakeup fd, cuts every MySQL connection opened under the guard, and
the blocked read returns at once. In any other thread, where Python allows no signal
handlers, a timer cuts those connections at the deadline and the failed read is
reported as the deadline it is.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import FrameType

from .errors import DeadlineExceeded, Interrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class RunGuard:
    """The deadline of one run and the connections to cut when it must stop."""

    def __init__(self, max_seconds: float) -> None:
        self.max_seconds = max_seconds
        self.deadline = time.monotonic() + max_seconds
        self._cutters: dict[int, Callable[[], None]] = {}
        self._lock = threading.Lock()
        self._next = 0
        self.stopping = False  # a stop signal or the deadline was raised: cleaning up now

    def watch(self, cut: Callable[[], None]) -> Callable[[], None]:
        """Register a way to cut a connection; returns the call that unregisters it."""
        with self._lock:
            handle, self._next = self._next, self._next + 1
            self._cutters[handle] = cut

        def unwatch() -> None:
            with self._lock:
                self._cutters.pop(handle, None)

        return unwatch

    def cut_all(self) -> None:
        """Cut every registered connection; safe from any thread."""
        with self._lock:
            cutters = list(self._cutters.values())
        for cut in cutters:
            cut()

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def exceeded(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"run passed run.max_seconds ({self.max_seconds:g} s); stopped")


_current: ContextVar[RunGuard | None] = ContextVar("cachewarm_run_guard", default=None)


def current() -> RunGuard | None:
    """The guard of the run in this thread (or context), if any."""
    return _current.get()


@contextlib.contextmanager
def run_guard(max_seconds: float) -> Iterator[RunGuard]:
    """Bound the block to `max_seconds` and stop it cleanly on SIGTERM, SIGINT or SIGHUP.

    Raises DeadlineExceeded or Interrupted (exit codes 1, 143, 130, 129) from the
    block. Signal handlers are installed only in the main thread, and put back after.
    """
    guard = RunGuard(max_seconds)
    token = _current.set(guard)
    try:
        in_main = threading.current_thread() is threading.main_thread()
        with _signals(guard) if in_main else _timer(guard):
            yield guard
    finally:
        _current.reset(token)


@contextlib.contextmanager
def _timer(guard: RunGuard) -> Iterator[None]:
    timer = threading.Timer(guard.max_seconds, guard.cut_all)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@contextlib.contextmanager
def _signals(guard: RunGuard) -> Iterator[None]:
    # Only the first stop raises: a second SIGTERM (or Ctrl-C) arriving while the run
    # cleans up must not cut short its release of the lock or its run-log record.
    def interrupted(signum: int, _: FrameType | None) -> None:
        if not guard.stopping:
            guard.stopping = True
            raise Interrupted(signal.Signals(signum).name, 128 + signum)

    def alarm(_: int, __: FrameType | None) -> None:
        if not guard.stopping:
            guard.stopping = True
            raise guard.exceeded()

    def watch(fd: int) -> None:
        while (woken := os.read(fd, 64)) and 0 not in woken:  # 0: the stop sentinel
            guard.cut_all()

    handled = (*STOP_SIGNALS, signal.SIGALRM)
    previous = {s: signal.getsignal(s) for s in handled}
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    watchdog = threading.Thread(
        target=watch, args=(read_fd,), name="cachewarm-watchdog", daemon=True
    )
    watchdog.start()
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for sig in STOP_SIGNALS:
        signal.signal(sig, interrupted)
    signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, guard.max_seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        os.write(write_fd, b"\0")
        watchdog.join(timeout=1)
        os.close(write_fd)
        os.close(read_fd)
