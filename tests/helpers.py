"""Helpers shared by the tests: the real `cachewarm` command, processes, servers' contents.

Importing this module starts nothing; the server fixtures live in integration/conftest.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import pty
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import seed as shop_seed  # scripts/seed.py -> examples/seed.py
import structlog
from click.testing import CliRunner
from pymysql.connections import Connection
from redis.cluster import RedisCluster

from cachewarm import Settings, audit, warm
from cachewarm.cli import main
from cachewarm.errors import SourceError
from cachewarm.runlog import RunRecord

SHOP_PRODUCTS = 200
"""Products in the shop_db fixture's database."""
MakeConfig = Callable[..., Path]
"""The make_config fixture: keywords override config keys, returns the file's path."""
MakeSettings = Callable[..., Settings]
"""The make_settings fixture: make_config's file, loaded as the CLI would."""
Proc = TypeVar("Proc", bound="subprocess.Popen[Any]")
SLOW_HOT_QUERY = "SELECT id FROM products WHERE SLEEP(0.05) = 0 ORDER BY id LIMIT %(limit)s"


@dataclass(frozen=True)
class ShopDB:
    """A freshly seeded sample-shop database; url includes the database name."""

    name: str
    url: str

    def connect(self) -> Connection:
        """New autocommit utf8mb4 connection to this database; the caller closes it."""
        return shop_seed.connect(self.url, local_infile=False)


def require_mysqlclient() -> None:
    """Skip a test that needs the `fast` extra where it is not installed; under CI it
    is always installed, so there a missing mysqlclient fails instead of skipping."""
    if os.environ.get("CI") == "true":
        import MySQLdb  # noqa: F401
    else:
        pytest.importorskip("MySQLdb", reason="needs the fast extra (mysqlclient)")


def require_command(name: str, package: str) -> str:
    """The path of a command a test runs; skipped where it is missing, but under CI
    (where scripts/bootstrap installs `package`) a missing one fails."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is missing; scripts/bootstrap installs the {package} package")
        pytest.skip(f"needs {name} (Debian package {package}; scripts/bootstrap installs it)")
    return path


@contextlib.contextmanager
def mysql_user(server_url: str, grants: str) -> Iterator[tuple[str, str]]:
    """A MySQL user with these grants (e.g. "SELECT ON *.*"), dropped afterwards:
    (its name, its password)."""
    user = f"cwu_{secrets.token_hex(4)}"
    password = f"pw-{user}"
    root = shop_seed.connect(server_url, server_only=True, local_infile=False)
    try:
        with root.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
            cur.execute(f"GRANT {grants} TO '{user}'@'%'")
        yield user, password
    finally:
        with root.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        root.close()


def slow_listing_query(seconds_per_row: float, *, extra_column: bool = False) -> str:
    """The sample listing query, sleeping per row while MySQL reads it.

    With extra_column the rows carry an `s` column (0), so its listings differ from the
    sample query's: a write by this query is recognisable in Redis.
    """
    extra = f", SLEEP({seconds_per_row}) AS s" if extra_column else ""
    where = "" if extra_column else f" AND SLEEP({seconds_per_row}) = 0"
    return (
        "SELECT p.id, p.sku, p.name, p.description, p.price, p.weight_kg, p.released_on, "
        f"p.updated_at, p.thumbnail, c.name AS category, c.slug AS category_slug{extra} "
        f"FROM products p JOIN categories c ON c.id = p.category_id WHERE p.id IN %(ids)s{where}"
    )


def cachewarm(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cachewarm", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def cachewarm_here(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`cachewarm(...)` without a new interpreter: the same entry point, `cachewarm.cli.main`,
    run in this process by click's CliRunner, with its exit code, stdout and stderr apart.

    For tests of what a command does and prints. What only a process shows (signals, a
    terminal, cron's environment, pids, pipes) is tested through `cachewarm` or `start`.
    """
    logging_config = structlog.get_config()
    argv = sys.argv
    try:
        with CliRunner().isolation(input=stdin, env=env) as (out, err, _):
            sys.argv = ["cachewarm", *args]
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    finally:
        sys.argv = argv
        structlog.configure(**logging_config)  # main() configured it for its own streams
    return subprocess.CompletedProcess(["cachewarm", *args], code, stdout, stderr)


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cachewarm", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@contextlib.contextmanager
def running(proc: Proc) -> Iterator[Proc]:
    """The started process, killed if still running and always reaped on the way out.

    A failed assertion must not leave a run behind holding a lock, a connection or a pipe.
    """
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


class Warming(threading.Thread):
    """`cachewarm.warm(settings)` in a thread, keeping its record or whatever it raised."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="warm")
        self.settings = settings
        self.record: RunRecord | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.record = warm(self.settings)
        except BaseException as exc:
            self.error = exc

    def result(self) -> RunRecord:
        """The finished warm's record; fails the test if it raised or never ended."""
        assert not self.is_alive(), "the warm did not end"
        assert self.record is not None, self.error
        return self.record


@contextlib.contextmanager
def warming(settings: Settings, join_s: float = 30) -> Iterator[Warming]:
    """A warm started in a thread, joined on the way out."""
    thread = Warming(settings)
    thread.start()
    try:
        yield thread
    finally:
        thread.join(timeout=join_s)


def wait_for(what: str, check: Callable[[], object], timeout: float = 15) -> None:
    """Poll `check` until it returns something true, or fail naming `what`."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if check():
            return
        time.sleep(0.02)  # the polling interval; the condition above decides, not the time
    raise AssertionError(f"timed out waiting for {what}")


def wait_for_lock_holder(lockfile: Path, timeout: float = 15) -> None:
    wait_for(
        f"a run to take {lockfile}",
        lambda: lockfile.exists() and lockfile.read_text().strip(),
        timeout,
    )


def runs(config: Path) -> list[dict[str, object]]:
    text = config.with_name("runs.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def product_keys(client: redis.Redis, prefix: str, version: int = 1) -> list[bytes]:
    return list(client.scan_iter(match=f"{prefix}:v{version}:product:*"))


def running_listing_batches(
    conn: Connection, marker: str = "SLEEP("
) -> list[tuple[int, list[int]]]:
    """(milliseconds running, ids) of every listing query now running on the server."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT TIME_MS, INFO FROM information_schema.PROCESSLIST "
            "WHERE INFO LIKE %s AND INFO LIKE %s AND ID <> CONNECTION_ID()",
            (f"%{marker}%", "%IN (%"),
        )
        rows = cur.fetchall()
    found = []
    for time_ms, info in rows:
        ids = re.search(r"IN \(([\d,\s]+)\)", str(info))
        if ids:
            found.append((int(time_ms), [int(i) for i in ids.group(1).split(",")]))
    return found


@dataclasses.dataclass
class Race:
    """What `invalidate_a_batch_in_flight` did. `caught`: the ids of the batch whose query
    was still reading after their invalidation returned, [] if none was. `edited`: every id
    it edited and invalidated, `caught` and any batch that finished reading first (the warm
    may or may not have written those before their invalidation: either way they end fresh)."""

    caught: list[int]
    edited: list[int]

    def __bool__(self) -> bool:
        return bool(self.caught)


def invalidate_a_batch_in_flight(
    conn: Connection, warm_alive: Callable[[], bool], invalidate: Callable[[list[int]], object]
) -> Race:
    """The admin flow, raced against a warm: edit rows a listing query is reading, invalidate,
    up to four batches until one is caught still reading."""
    race = Race(caught=[], edited=[])
    for _ in range(4):
        batches: list[tuple[int, list[int]]] = []

        def reading(found: list[tuple[int, list[int]]] = batches) -> bool:
            found[:] = [b for b in running_listing_batches(conn) if b[0] >= 100]
            return bool(found)

        wait_for("a listing query in flight", lambda: reading() or not warm_alive())
        if not batches:
            return race
        ids = batches[0][1]
        with conn.cursor() as cur:
            cur.execute("UPDATE products SET name = CONCAT('edited ', id) WHERE id IN %s", (ids,))
        race.edited += ids
        invalidate(ids)
        if any(b[1] == ids for b in running_listing_batches(conn)):
            race.caught = ids
            return race
    return race


def kill_queries(conn: Connection, marker: str) -> None:
    """KILL every other connection whose running query contains `marker`."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE %s "
            "AND ID <> CONNECTION_ID()",
            (f"%{marker}%",),
        )
        for (thread_id,) in cur.fetchall():
            try:
                cur.execute(f"KILL {int(thread_id)}")
            except Exception:  # noqa: S112 - it may have ended in the meantime
                continue


def one_line(text: str) -> str:
    """The text, asserting it is exactly one line ending in a newline."""
    assert text.endswith("\n") and text.count("\n") == 1, f"expected one line, got {text!r}"
    return text.rstrip("\n")


class Gate:
    """A MySQL user lock the test holds: a hot query that takes it blocks until open()."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.name = f"cwgate_{secrets.token_hex(6)}"
        self.closed = False
        with conn.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 0)", (self.name,))
            row = cur.fetchone()
        assert row is not None and row[0] == 1
        self.closed = True

    @property
    def hot_query(self) -> str:
        """All products, once the gate opens (GET_LOCK waits up to 30 s for it)."""
        return (
            f"SELECT id FROM products WHERE GET_LOCK('{self.name}', 30) = 1 "
            "ORDER BY id LIMIT %(limit)s"
        )

    def open(self) -> None:
        if self.closed:
            with self.conn.cursor() as cur:
                cur.execute("SELECT RELEASE_LOCK(%s)", (self.name,))
            self.closed = False


@contextlib.contextmanager
def gate(conn: Connection) -> Iterator[Gate]:
    held = Gate(conn)
    try:
        yield held
    finally:
        held.open()


def snapshot(client: redis.Redis | RedisCluster, prefix: str) -> dict[bytes, bytes | None]:
    """Every key under the prefix with its serialized value (DUMP), for exact comparison
    (on a cluster, SCAN goes to every master)."""
    return {k: client.dump(k) for k in client.scan_iter(match=f"{prefix}:*")}


def on_a_terminal(*args: str) -> tuple[int, str]:
    """Run the command with stdout and stderr on a pseudo-terminal; (exit code, screen)."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cachewarm", *args],
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    screen = b""
    with running(proc):
        with contextlib.suppress(OSError):  # EIO once the child has closed its end
            while chunk := os.read(main, 65536):
                screen += chunk
        os.close(main)
        code = proc.wait(timeout=60)
    return code, screen.decode("utf-8", "replace")


def lock_is_free(lockfile: Path) -> bool:
    """Whether this process can take the flock at once (and drops it again)."""
    fd = os.open(lockfile, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def stale_ids(settings: Settings) -> list[int]:
    """What `cachewarm audit --all` finds stale now, re-checking after a tenth of a second.

    A listing query that finds no row for cached listings (a TRUNCATE not yet followed)
    is an error to the audit, as to a warm; here it means "not fresh yet": [-1].
    """
    quick = replace(settings, audit=replace(settings.audit, recheck_after=0.1))
    try:
        return audit(quick, every=True).stale_ids
    except SourceError:
        return [-1]
