"""One clock for decisions: a stepped local clock skews no decision taken across runs.

Each test runs cachewarm under faketime, which steps every clock the process asks the C
library for. A real step (NTP, `date -s`, a VM resumed) moves only the wall clock; the
kernel's time since boot (/proc/uptime, which faketime leaves alone) and the servers'
clocks stay right in both.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from pymysql.connections import Connection

from cachewarm import lock
from cachewarm.keys import Keys
from tests.helpers import (
    MakeConfig,
    gate,
    require_command,
    running,
    runs,
    start,
    wait_for,
    wait_for_lock_holder,
)

CHANGED = "SELECT id FROM products WHERE updated_at >= %(since)s"


def stepped(offset: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`cachewarm ARGS` on a host whose wall clock is `offset` (e.g. +1d) off."""
    faketime = require_command("faketime", "faketime")
    return subprocess.run(
        [faketime, "-f", offset, sys.executable, "-m", "cachewarm", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_step_is_real_in_this_test() -> None:
    """The premise: under `stepped`, Python's wall clock is a day ahead."""
    result = subprocess.run(
        [
            require_command("faketime", "faketime"),
            "-f",
            "+1d",
            sys.executable,
            "-c",
            "import time; print(time.time())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(result.stdout) - time.time() > 86_000


@pytest.mark.writes_mysql
def test_a_full_warm_from_a_clock_a_day_ahead_keeps_full_warms_on_schedule(
    make_config: MakeConfig, shop_conn: Connection, redis_client: redis.Redis, key_prefix: str
) -> None:
    config = make_config(changed_query=CHANGED, changed_overlap=0, full_every=3)
    ahead = stepped("+1d", "--config", str(config), "run", "--full")
    assert ahead.returncode == 0, ahead.stderr
    hot = json.loads(redis_client.get(Keys(key_prefix).hot) or b"[]")
    gone = hot[0]
    with shop_conn.cursor() as cur:  # still hot, but deleted: only a full warm notices
        cur.execute("DELETE FROM products WHERE id = %s", (gone,))

    def warm() -> str:
        result = subprocess.run(
            [sys.executable, "-m", "cachewarm", "--config", str(config), "run"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return str(runs(config)[-1]["mode"])

    assert warm() == "incremental"  # the full warm a moment ago counts, a day ahead or not
    assert redis_client.exists(Keys(key_prefix).product(gone))  # not yet noticed
    time.sleep(3.5)  # full_every (3 s) passes on Redis' clock
    assert warm() == "full"
    assert not redis_client.exists(Keys(key_prefix).product(gone))
    assert gone not in json.loads(redis_client.get(Keys(key_prefix).hot) or b"[]")


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_a_run_hours_ahead_meeting_a_live_holder_skips(
    kind: str,
    make_config: MakeConfig,
    shop_conn: Connection,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    """A holder well within its max_seconds is busy, not stuck, whatever this clock says."""
    with gate(shop_conn) as held:
        config = make_config(hot_query=held.hot_query, lock=kind, max_seconds=600)
        with running(start("--config", str(config), "run")) as proc:
            if kind == "file":
                wait_for_lock_holder(config.with_name("cw.lock"))
            else:
                lock_key = Keys(key_prefix).lock
                wait_for("the Redis lock", lambda: redis_client.exists(lock_key))
            skip = stepped("+2h", "--config", str(config), "-v", "run")
            held.open()
            proc.communicate(timeout=60)
    assert skip.returncode == 75, skip.stderr
    assert "is held by run" in skip.stderr and "stuck" not in skip.stderr
    assert [r["status"] for r in runs(config)] == ["skipped", "ok"]


def test_status_flags_a_holder_past_its_deadline_as_run_does(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """The same words, on the same clock, as the run that would meet it."""
    config = make_config()
    lockfile = config.with_name("cw.lock")
    info = lock.holder_info("frozen", 60)
    info["boot_s"] -= 60 + lock.STUCK_MARGIN_S + 30
    fd = os.open(lockfile, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, json.dumps(info).encode())
        status = stepped("-3h", "--config", str(config), "status")
        run = stepped("-3h", "--config", str(config), "run")
    finally:
        os.close(fd)
    assert status.returncode == 0, status.stderr
    assert "that run looks stuck" in status.stdout
    assert run.returncode == 1 and "that run looks stuck" in run.stderr
