"""Races, crashes, hung and dead servers, signals: what cron will eventually throw at a run.

Every test drives real servers; fault injection uses the private `mariadb_server` /
`redis_server` fixtures (kill, SIGSTOP, restart), never the shared session servers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
import seed
from pymysql.connections import Connection
from servers import Server

import cachewarm as cw
from cachewarm.keys import Keys
from cachewarm.lock import file_lock_holder
from tests.helpers import (
    MakeConfig,
    MakeSettings,
    cachewarm,
    cachewarm_here,
    gate,
    invalidate_a_batch_in_flight,
    kill_queries,
    lock_is_free,
    one_line,
    product_keys,
    running,
    running_listing_batches,
    runs,
    slow_listing_query,
    snapshot,
    start,
    wait_for,
    wait_for_lock_holder,
    warming,
)


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, seconds it took) of a started run."""
    began = time.monotonic()
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err, time.monotonic() - began


# --- 1. no stale resurrection -------------------------------------------------------------


@pytest.mark.writes_mysql
@pytest.mark.parametrize("rewarm", [False, True], ids=["invalidate", "invalidate-rewarm"])
@pytest.mark.slow
def test_invalidation_during_a_warm_is_never_overwritten_with_stale_data(
    make_settings: MakeSettings,
    shop_conn: Connection,
    redis_client: redis.Redis,
    rewarm: bool,
) -> None:
    """Admin flow while a warm reads the very rows being edited: commit, then invalidate."""
    # A second per batch: the edit and invalidate must land while the batch still reads,
    # which a loaded CI box (or a cluster's invalidate) can take a few hundred ms to do.
    s = make_settings(listing_query=slow_listing_query(0.25), batch_size=4, limit=16)
    admin = make_settings(batch_size=4)  # same keys and listings, without the slowness
    keys = Keys(s.keys.prefix, s.keys.version)
    with warming(s) as warm:
        raced = invalidate_a_batch_in_flight(
            shop_conn, warm.is_alive, lambda ids: cw.invalidate(admin, ids, rewarm=rewarm)
        )
    assert raced, "never caught a batch in flight; the race was not exercised"
    record = warm.result()
    assert record.status == "ok"
    # the batch caught is skipped; one that finished reading just before may be too
    assert len(raced.caught) <= record.skipped_invalidated <= len(raced.edited)
    hot = json.loads(redis_client.get(keys.hot) or b"")
    for product_id in raced.edited:
        value = redis_client.get(keys.product(product_id))
        if rewarm:
            assert value is not None, f"rewarmed listing {product_id} missing"
        if value is not None:
            assert json.loads(value)["name"] == f"edited {product_id}", "stale listing resurrected"
        else:
            assert product_id not in hot, "hot list names a product without a listing"
    audited = cw.audit(admin, every=True)  # every cached listing, not only the raced ones
    assert audited.stale == 0 and audited.checked >= len(raced.edited), audited.stale_ids


# --- 2. timeouts ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("driver", "query", "stage"),
    [
        ("pymysql", "hot_query", "running the hot query on MySQL at 127.0.0.1:"),
        ("pymysql", "listing_query", "running the listing query on MySQL at 127.0.0.1:"),
        ("mysqlclient", "hot_query", "running the hot query on MySQL at 127.0.0.1:"),
        ("mysqlclient", "listing_query", "running the listing query on MySQL at 127.0.0.1:"),
    ],
)
def test_hung_query_stops_at_max_seconds_and_names_what_hung(
    make_config: MakeConfig, shop_conn: Connection, query: str, stage: str, driver: str
) -> None:
    hung = {
        "hot_query": "SELECT SLEEP(60) + 7 AS id LIMIT %(limit)s",
        "listing_query": "SELECT id, name, SLEEP(60) AS s FROM products WHERE id IN %(ids)s",
    }[query]
    config = make_config(max_seconds=2, driver=driver, **{query: hung})
    began = time.monotonic()
    try:
        result = cachewarm("--config", str(config), "run", timeout=8)
    finally:
        kill_queries(shop_conn, "SLEEP(60)")
    elapsed = time.monotonic() - began
    assert result.returncode == 1, result.stderr
    line = one_line(result.stderr)
    assert line.startswith("cachewarm: error: run passed run.max_seconds")
    assert stage in line
    assert elapsed < 8, f"took {elapsed:.1f} s to give up"
    record = runs(config)[-1]
    assert record["status"] == "failed"
    assert record["error"] == line.removeprefix("cachewarm: error: ")
    assert lock_is_free(config.with_name("cw.lock"))
    assert cachewarm("--config", str(make_config()), "run").returncode == 0


def blocked_on_gate(conn: Connection, name: str) -> bool:
    """Whether a query is waiting for the gate: its result set has begun streaming."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE INFO LIKE %s AND STATE = 'User lock' AND ID <> CONNECTION_ID()",
            (f"%{name}%",),
        )
        row = cur.fetchone()
    return bool(row and row[0])


def waiting_for_rows(pid: int) -> bool:
    """Whether the process sleeps with nothing unread on any of its TCP sockets.

    A query waiting at the gate has already sent its result's column definitions: once
    the run's sockets are drained and its main thread sleeps, the driver has read them
    and waits for the first row.
    """
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        sockets = {
            target.removeprefix("socket:[").removesuffix("]")
            for fd in Path(f"/proc/{pid}/fd").iterdir()
            if (target := os.readlink(fd)).startswith("socket:[")
        }
    except FileNotFoundError:  # the process, or one of its descriptors, has just gone
        return False
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in table.read_text().splitlines()[1:] if table.exists() else ():
            fields = line.split()  # sl local remote st tx:rx tr:when retrnsmt uid timeout inode
            if fields[9] in sockets and int(fields[4].partition(":")[2], 16):
                return False  # bytes received but not yet read
    return state == "S"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("driver", "how"),
    [
        ("pymysql", "deadline"),
        ("pymysql", "SIGTERM"),
        ("mysqlclient", "deadline"),
        ("mysqlclient", "SIGTERM"),
    ],
)
@pytest.mark.slow
def test_run_stops_promptly_while_a_query_is_streaming(
    make_config: MakeConfig, shop_conn: Connection, driver: str, how: str
) -> None:
    """Blocked after the result began (not before it): the case the hung-query test misses."""
    with gate(shop_conn) as held:
        config = make_config(
            hot_query=held.hot_query, driver=driver, max_seconds=2 if how == "deadline" else 60
        )
        began = time.monotonic()
        with running(start("--config", str(config), "run")) as proc:
            wait_for("the hot query to block", lambda: blocked_on_gate(shop_conn, held.name))
            wait_for("the run to wait for the first row", lambda: waiting_for_rows(proc.pid))
            if how == "SIGTERM":
                proc.send_signal(signal.SIGTERM)
            code, _, err, _ = finish(proc, timeout=5)
    assert code == (1 if how == "deadline" else 143), err
    assert "running the hot query on MySQL at" in one_line(err)
    assert time.monotonic() - began < 6


@pytest.mark.timeout(60)
def test_frozen_redis_fails_with_a_clear_error(
    make_config: MakeConfig, redis_server: Server, key_prefix: str
) -> None:
    assert redis_server.pid is not None
    config = make_config(
        redis_url=redis_server.url,
        redis_timeout=1,
        listing_query=slow_listing_query(0.05),
        batch_size=4,
    )
    client = redis.Redis.from_url(redis_server.url)
    with running(start("--config", str(config), "run")) as proc:
        wait_for("the first batch in Redis", lambda: product_keys(client, key_prefix))
        os.kill(redis_server.pid, signal.SIGSTOP)
        try:
            code, _, err, elapsed = finish(proc)
        finally:
            os.kill(redis_server.pid, signal.SIGCONT)
    assert code == 1, err
    line = one_line(err)
    assert line.startswith(f"cachewarm: error: Redis at {redis_server.url}"), line
    assert "imeout" in line
    assert elapsed < 10, f"took {elapsed:.1f} s to notice"
    assert not client.exists(Keys(key_prefix, 1).hot)
    client.close()
    assert runs(config)[-1]["status"] == "failed"
    fast = make_config(redis_url=redis_server.url)
    assert cachewarm("--config", str(fast), "run").returncode == 0


# --- 3. signals ----------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.slow
def test_signal_mid_run_exits_cleanly_and_leaves_the_hot_list_alone(
    make_config: MakeConfig,
    shop_conn: Connection,
    redis_client: redis.Redis,
    key_prefix: str,
    sig: signal.Signals,
    code: int,
) -> None:
    fast = make_config()
    assert cachewarm("--config", str(fast), "run").returncode == 0
    keys = Keys(key_prefix, 1)
    published = (redis_client.dump(keys.hot), redis_client.hgetall(keys.hot_meta))
    assert published[0] is not None
    slow = make_config(listing_query=slow_listing_query(0.05), batch_size=4)
    with running(start("--config", str(slow), "run")) as proc:
        wait_for("a listing query in flight", lambda: running_listing_batches(shop_conn))
        proc.send_signal(sig)
        returncode, _, err, elapsed = finish(proc)
    assert returncode == code, err
    line = one_line(err)
    assert line.startswith(f"cachewarm: error: interrupted by {sig.name} while running the ")
    assert elapsed < 5
    record = runs(slow)[-1]
    assert (record["status"], record["pid"]) == ("interrupted", proc.pid)
    assert record["error"] == line.removeprefix("cachewarm: error: ")
    assert (redis_client.dump(keys.hot), redis_client.hgetall(keys.hot_meta)) == published
    lockfile = slow.with_name("cw.lock")
    assert file_lock_holder(lockfile) is None and lock_is_free(lockfile)
    assert cachewarm("--config", str(fast), "run").returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_repeated_signals_while_cleaning_up_keep_the_run_log_line(
    make_config: MakeConfig, shop_conn: Connection, sig: signal.Signals
) -> None:
    """An impatient operator (or init) signalling again must not cut the cleanup short."""
    slow = make_config(listing_query=slow_listing_query(0.05), batch_size=4)
    with running(start("--config", str(slow), "run")) as proc:
        wait_for("a listing query in flight", lambda: running_listing_batches(shop_conn))
        proc.send_signal(sig)
        while proc.poll() is None:  # keep signalling through the whole cleanup
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            time.sleep(0.002)  # a signal every 2 ms: many land inside the cleanup
        _, err = proc.communicate()
    # Once cleanup is done the default action may end the process (-sig) before it prints.
    assert proc.returncode in (128 + sig, -sig), err
    if proc.returncode == 128 + sig:
        assert one_line(err).startswith(f"cachewarm: error: interrupted by {sig.name} while ")
    record = runs(slow)[-1]
    assert (record["status"], record["pid"]) == ("interrupted", proc.pid)
    assert lock_is_free(slow.with_name("cw.lock"))


# --- 4. servers dying mid-run ---------------------------------------------------------------


@pytest.mark.timeout(90)
def test_redis_killed_during_the_write_phase(
    make_config: MakeConfig, redis_server: Server, key_prefix: str
) -> None:
    config = make_config(
        redis_url=redis_server.url, listing_query=slow_listing_query(0.05), batch_size=4
    )
    client = redis.Redis.from_url(redis_server.url)
    with running(start("--config", str(config), "run")) as proc:
        wait_for("the first batch in Redis", lambda: product_keys(client, key_prefix))
        client.close()
        redis_server.kill()
        code, _, err, elapsed = finish(proc)
    assert code == 1, err
    line = one_line(err)
    assert line.startswith(f"cachewarm: error: Redis at {redis_server.url}"), line
    assert elapsed < 10
    record = runs(config)[-1]
    assert (record["status"], record["hot_published"]) == ("failed", False)
    redis_server.restart()
    again = cachewarm("--config", str(make_config(redis_url=redis_server.url)), "run")
    assert again.returncode == 0, again.stderr
    client = redis.Redis.from_url(redis_server.url)
    assert client.exists(Keys(key_prefix, 1).hot)
    client.close()


@pytest.mark.timeout(90)
def test_mariadb_killed_during_the_read_phase(
    make_config: MakeConfig,
    mariadb_server: Server,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    url = f"{mariadb_server.url}/shop"
    seed.seed(url, 200)
    config = make_config(mysql_url=url, listing_query=slow_listing_query(0.05), batch_size=4)
    admin = seed.connect(url, local_infile=False)
    with running(start("--config", str(config), "run")) as proc:
        wait_for("a listing query in flight", lambda: running_listing_batches(admin))
        admin.close()
        mariadb_server.kill()
        code, _, err, elapsed = finish(proc)
    assert code == 1, err
    line = one_line(err)
    assert f"MySQL at 127.0.0.1:{mariadb_server.port}/shop" in line, line
    assert elapsed < 10
    assert redis_client.exists(Keys(key_prefix, 1).hot) == 0
    assert runs(config)[-1]["status"] == "failed"
    mariadb_server.restart()
    again = cachewarm("--config", str(make_config(mysql_url=url)), "run")
    assert again.returncode == 0, again.stderr
    assert redis_client.exists(Keys(key_prefix, 1).hot) == 1


# --- 5. the run log ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_fifty_simultaneous_runs_one_works_the_rest_skip_and_the_log_stays_whole(
    make_config: MakeConfig, shop_conn: Connection
) -> None:
    with gate(shop_conn) as held:
        config = make_config(hot_query=held.hot_query)
        with contextlib.ExitStack() as stack:
            procs = [
                stack.enter_context(running(start("--config", str(config), "run")))
                for _ in range(50)
            ]
            wait_for(
                "49 runs to give up",
                lambda: sum(p.poll() is not None for p in procs) >= 49,
                timeout=60,
            )
            wait_for(
                "the winner to wait at the gate", lambda: blocked_on_gate(shop_conn, held.name)
            )
            assert sum(p.poll() is not None for p in procs) == 49
            held.open()
            outcomes = [finish(p) for p in procs]
    codes = sorted(code for code, *_ in outcomes)
    assert codes == [0] + [75] * 49, [err for code, _, err, _ in outcomes if code not in (0, 75)]
    for code, _, err, _ in outcomes:
        if code == 75:
            assert err == ""  # a skip off a terminal is silent
    raw = config.with_name("runs.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert len(lines) == 50
    records = [json.loads(line) for line in lines]
    assert sorted(r["status"] for r in records) == ["ok"] + ["skipped"] * 49
    assert {r["pid"] for r in records} == {p.pid for p in procs}


def test_run_log_renamed_away_mid_run_is_recreated(
    make_config: MakeConfig, shop_conn: Connection
) -> None:
    first = make_config()
    assert cachewarm("--config", str(first), "run").returncode == 0
    log = first.with_name("runs.jsonl")
    rotated = log.with_name("runs.jsonl.1")
    before = log.read_bytes()
    with gate(shop_conn) as held:
        config = make_config(hot_query=held.hot_query)
        with running(start("--config", str(config), "run")) as proc:
            wait_for_lock_holder(config.with_name("cw.lock"))
            log.rename(rotated)  # what logrotate does, while the run is working
            held.open()
            code, _, err, _ = finish(proc)
    assert code == 0, err
    assert rotated.read_bytes() == before
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["status"], r["pid"]) for r in records] == [("ok", proc.pid)]


@pytest.mark.parametrize("where", ["log", "lockfile"])
@pytest.mark.parametrize("how", ["under-a-file", "is-a-directory"])
def test_unusable_run_log_or_lockfile_fails_before_any_work(
    make_config: MakeConfig,
    redis_client: redis.Redis,
    key_prefix: str,
    tmp_path: Path,
    where: str,
    how: str,
) -> None:
    """Root ignores permission bits, so break the paths in ways that stop root too."""
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "adir").mkdir()
    name = "runs.jsonl" if where == "log" else "cw.lock"
    path = tmp_path / "afile" / name if how == "under-a-file" else tmp_path / "adir"
    config = make_config(**{where: str(path)})
    result = cachewarm_here("--config", str(config), "run")
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert str(path) in line, line
    assert ("run log" if where == "log" else "lock") in line
    assert list(redis_client.scan_iter(match=f"{key_prefix}:*")) == []
    if where == "lockfile":
        assert runs(config)[-1]["status"] == "failed"


# --- 7. several cron hosts: the Redis lock ------------------------------------------------------


@pytest.mark.writes_mysql
@pytest.mark.timeout(90)
def test_paused_redis_lock_holder_cannot_overwrite_the_next_holder(
    make_config: MakeConfig,
    shop_conn: Connection,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    keys = Keys(key_prefix, 1)
    # A's listings carry an extra `s` field: any write of A's is recognisable in Redis.
    slow = make_config(
        lock="redis",
        lock_ttl=1,
        listing_query=slow_listing_query(0.1, extra_column=True),
        batch_size=4,
        limit=40,
    )
    fast = make_config(lock="redis", lock_ttl=1)
    with running(start("--config", str(slow), "run")) as a:
        wait_for("A's first batch", lambda: product_keys(redis_client, key_prefix))
        a.send_signal(signal.SIGSTOP)
        wait_for("A's lock to expire", lambda: not redis_client.exists(keys.lock), timeout=10)
        with shop_conn.cursor() as cur:
            cur.execute("UPDATE products SET name = CONCAT('edited by B ', id)")
        b = cachewarm("--config", str(fast), "run")
        assert b.returncode == 0, b.stderr
        after_b = snapshot(redis_client, key_prefix)
        a.send_signal(signal.SIGCONT)
        code, _, err, _ = finish(a)
    assert code == 1, err
    line = one_line(err)
    assert "lock" in line and "no longer held" in line, line
    assert snapshot(redis_client, key_prefix) == after_b
    hot = json.loads(redis_client.get(keys.hot) or b"")
    for product_id in hot:
        listing = json.loads(redis_client.get(keys.product(product_id)) or b"")
        assert "s" not in listing, f"A overwrote product {product_id}"
        assert listing["name"] == f"edited by B {product_id}"
    statuses = {r["pid"]: r["status"] for r in runs(slow)}
    assert statuses[a.pid] == "failed"


def test_overlapping_redis_lock_runs_second_skips(
    make_config: MakeConfig, shop_conn: Connection, redis_client: redis.Redis, key_prefix: str
) -> None:
    with gate(shop_conn) as held:
        first = make_config(lock="redis", hot_query=held.hot_query)
        with running(start("--config", str(first), "run")) as proc:
            wait_for("the Redis lock", lambda: redis_client.exists(Keys(key_prefix, 1).lock))
            second = cachewarm("--config", str(make_config(lock="redis")), "run")
            held.open()
            code, _, err, _ = finish(proc)
    assert second.returncode == 75
    assert second.stderr == ""  # a skip off a terminal is silent; the run log names the holder
    skip = next(r for r in runs(first) if r["status"] == "skipped")
    assert str(skip["error"]).startswith(f"Redis lock {key_prefix}:v1:meta:lock is held by run ")
    assert f"pid {proc.pid}" in str(skip["error"])
    assert code == 0, err
    assert not redis_client.exists(Keys(key_prefix, 1).lock)
