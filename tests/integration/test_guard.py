"""run_guard from Python: the CLI's deadline backstop, for library callers in any thread.

A query blocked in the driver (the hot query waiting on a MySQL user lock the test
holds) must end at the deadline whether the caller is the main thread, where signals
work, or another thread, where only the guard's timer can cut the connection.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest
from pymysql.connections import Connection

import cachewarm
from cachewarm import Settings
from cachewarm.errors import DeadlineExceeded
from tests.helpers import MakeSettings, gate, kill_queries


def _warm_guarded(settings: Settings) -> BaseException | None:
    try:
        with cachewarm.run_guard(settings.run.max_seconds):
            cachewarm.warm(settings)
    except BaseException as exc:
        return exc
    return None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("driver", ["pymysql", "mysqlclient"])
@pytest.mark.parametrize("where", ["main thread", "other thread"])
def test_guard_stops_a_blocked_query_at_the_deadline(
    make_settings: MakeSettings, shop_conn: Connection, driver: str, where: str
) -> None:
    with gate(shop_conn) as held:
        settings = make_settings(hot_query=held.hot_query, driver=driver, max_seconds=1.5)
        began = time.monotonic()
        if where == "main thread":
            error = _warm_guarded(settings)
        else:
            outcome: list[BaseException | None] = []
            worker = threading.Thread(target=lambda: outcome.append(_warm_guarded(settings)))
            worker.start()
            worker.join(timeout=20)
            assert not worker.is_alive(), "the guarded warm did not stop"
            error = outcome[0]
        elapsed = time.monotonic() - began
        kill_queries(shop_conn, held.name)
    assert isinstance(error, DeadlineExceeded), repr(error)
    assert "run.max_seconds" in str(error) and "running the hot query" in str(error)
    assert elapsed < 10, f"took {elapsed:.1f} s, the query waits up to 30 s"
    assert cachewarm.status(settings).runs[-1]["status"] == "failed"


def test_guard_restores_the_signal_handlers_it_replaced() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    with cachewarm.run_guard(5):
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in before} == before
