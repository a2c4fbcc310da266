"""Full disks, torn run logs, signals, broken pipes and odd passwords, on real servers.

The full disk is a real one: a 64 KiB tmpfs mounted for the test (needs root, as CI
runs; skipped with the reason where mounting is not allowed) and filled to the last page.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import seed
from pymysql.connections import Connection
from servers import Server

from cachewarm.keys import Keys
from cachewarm.lock import file_lock_holder
from cachewarm.urls import WITHHELD
from tests.helpers import (
    MakeConfig,
    ShopDB,
    cachewarm,
    lock_is_free,
    one_line,
    running,
    running_listing_batches,
    slow_listing_query,
    start,
    wait_for,
)

PAGE = 4096


class SmallDisk:
    """A mounted 64 KiB tmpfs that the test fills and frees."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        """Write until the filesystem refuses: no free page is left afterwards."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * PAGE)
        except OSError as full:
            assert full.errno == errno.ENOSPC
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    mount = tmp_path / "disk"
    mount.mkdir()
    tried = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if tried.returncode != 0:
        reason = f"cannot mount a tmpfs here: {tried.stderr.strip()}"
        if os.environ.get("CI"):  # CI runs as root: a full disk must really be tested there
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield SmallDisk(mount)
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def on_disk(make_config: MakeConfig, disk: SmallDisk, **overrides: object) -> Path:
    """A config whose lockfile and run log live on the small disk, as the default layout has."""
    return make_config(
        lockfile=str(disk.path / "cw.lock"), log=str(disk.path / "runs.jsonl"), **overrides
    )


RUNLOG_UNWRITABLE = "cannot write the run log"
METRICS_UNWRITABLE = "cannot write the metrics file"


def warnings_and_rest(stderr: str) -> tuple[list[str], list[str]]:
    """(what each warning line is about, the other lines) of a run off a terminal."""
    warnings, rest = [], []
    for line in stderr.splitlines():
        sentence = line.removeprefix("cachewarm: warning: ")
        if sentence != line:
            about = [w for w in (RUNLOG_UNWRITABLE, METRICS_UNWRITABLE) if sentence.startswith(w)]
            warnings.append(about[0] if about else sentence)
        else:
            rest.append(line)
    return warnings, rest


def status_runs(config: Path) -> list[dict[str, object]]:
    result = cachewarm("--config", str(config), "status", "--json", "--runs", "20")
    runs: list[dict[str, object]] = json.loads(result.stdout)["runs"]
    return runs


# --- a full disk under the run log and the metrics file -----------------------------------------


def test_full_disk_does_not_fail_a_good_run(
    make_config: MakeConfig, small_disk: SmallDisk, redis_client: redis.Redis, key_prefix: str
) -> None:
    config = on_disk(make_config, small_disk)
    small_disk.fill()
    result = cachewarm("--config", str(config), "run")
    assert result.returncode == 0, result.stderr
    events, rest = warnings_and_rest(result.stderr)
    assert (events, rest) == ([RUNLOG_UNWRITABLE], [])
    assert "No space left on device" in result.stderr
    assert redis_client.exists(Keys(key_prefix).hot)
    small_disk.free()
    assert cachewarm("--config", str(config), "run").returncode == 0
    assert [r["status"] for r in status_runs(config)] == ["ok"]


def test_full_disk_keeps_a_skipped_run_at_75(
    make_config: MakeConfig, small_disk: SmallDisk
) -> None:
    config = on_disk(make_config, small_disk)
    lockfile = small_disk.path / "cw.lock"
    fd = os.open(lockfile, os.O_RDWR | os.O_CREAT, 0o600)  # another run holds the lock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        small_disk.fill()
        result = cachewarm("--config", str(config), "run")
    finally:
        os.close(fd)
    assert result.returncode == 75, result.stderr
    events, rest = warnings_and_rest(result.stderr)
    assert events == [RUNLOG_UNWRITABLE]
    assert rest == []  # off a terminal the skip itself is silent: exit 75 says it


def test_full_disk_keeps_the_cause_of_a_redis_failure(
    make_config: MakeConfig, small_disk: SmallDisk, redis_server: Server
) -> None:
    config = on_disk(make_config, small_disk, redis_url=redis_server.url, connect_timeout=2)
    redis_server.stop()
    small_disk.fill()
    result = cachewarm("--config", str(config), "run")
    assert result.returncode == 1, result.stderr
    events, rest = warnings_and_rest(result.stderr)
    assert events == [RUNLOG_UNWRITABLE]
    assert len(rest) == 1 and rest[0].startswith("cachewarm: error: cannot connect to Redis at ")
    assert "No space left" not in rest[0]


def test_nearly_full_disk_writes_a_record_whole_or_not_at_all(
    make_config: MakeConfig, small_disk: SmallDisk
) -> None:
    config = on_disk(make_config, small_disk)
    log = small_disk.path / "runs.jsonl"
    assert cachewarm("--config", str(config), "run").returncode == 0
    # Pad with a blank line (the run log's readers skip it) so that only 200 bytes of the
    # last page are left: the next record, longer than that, is cut short by the disk.
    with log.open("a") as f:
        f.write(" " * (-(log.stat().st_size + 200 + 1) % PAGE) + "\n")
    assert log.stat().st_size % PAGE == PAGE - 200
    before = log.read_bytes()
    small_disk.fill()
    short = cachewarm("--config", str(config), "run")
    assert short.returncode == 0, short.stderr
    assert warnings_and_rest(short.stderr) == ([RUNLOG_UNWRITABLE], [])
    assert "short write (200 of " in short.stderr
    assert log.read_bytes() == before  # the 200 bytes written were cut off again
    small_disk.free()
    last = start("--config", str(config), "run")
    last.communicate(timeout=60)
    assert last.returncode == 0
    runs = status_runs(config)
    assert [r["status"] for r in runs] == ["ok", "ok"]
    assert runs[-1]["pid"] == last.pid


def test_a_torn_last_line_never_swallows_the_next_record(make_config: MakeConfig) -> None:
    """A fragment left by a crash or an older version stays a line of its own."""
    config = make_config()
    assert cachewarm("--config", str(config), "run").returncode == 0
    log = config.with_name("runs.jsonl")
    with log.open("a") as f:
        f.write('{"run_id":"0badc0ffee00","command":"run","sta')
    proc = start("--config", str(config), "run")
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    runs = status_runs(config)
    assert [(r["status"], r["pid"]) for r in runs][-1] == ("ok", proc.pid)
    assert len(runs) == 2


def test_full_disk_under_the_metrics_file_keeps_the_old_file_whole(
    make_config: MakeConfig, small_disk: SmallDisk
) -> None:
    metrics = small_disk.path / "cachewarm.prom"
    config = make_config(metrics_file=str(metrics))  # only the metrics file on the small disk
    assert cachewarm("--config", str(config), "run").returncode == 0
    before = metrics.read_text()
    assert before.endswith("\n") and 'status="ok"} 1' in before
    small_disk.fill()
    result = cachewarm("--config", str(config), "run")
    assert result.returncode == 0, result.stderr
    events, rest = warnings_and_rest(result.stderr)
    assert (events, rest) == ([METRICS_UNWRITABLE], [])
    assert "No space left on device" in result.stderr
    assert metrics.read_text() == before
    assert sorted(p.name for p in small_disk.path.iterdir()) == ["cachewarm.prom", "filler"]
    assert [r["status"] for r in status_runs(config)] == ["ok", "ok"]


# --- signals --------------------------------------------------------------------------------------


def test_sighup_records_an_interrupted_run_and_leaves_no_stale_holder(
    make_config: MakeConfig, shop_conn: Connection
) -> None:
    config = make_config(listing_query=slow_listing_query(0.05), batch_size=4)
    with running(start("--config", str(config), "run")) as proc:
        wait_for("a listing query in flight", lambda: running_listing_batches(shop_conn))
        proc.send_signal(signal.SIGHUP)  # the terminal or session it ran in went away
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 129, err
    line = one_line(err)
    assert line.startswith("cachewarm: error: interrupted by SIGHUP while running the ")
    record = status_runs(config)[-1]
    assert (record["status"], record["pid"]) == ("interrupted", proc.pid)
    assert record["error"] == line.removeprefix("cachewarm: error: ")
    lockfile = config.with_name("cw.lock")
    assert lockfile.read_bytes() == b""
    assert file_lock_holder(lockfile) is None and lock_is_free(lockfile)


# --- status --------------------------------------------------------------------------------------


def test_status_into_a_closed_pipe_exits_quietly(make_config: MakeConfig) -> None:
    """`cachewarm status | head -1`: the reader went away before status printed."""
    config = make_config()
    assert cachewarm("--config", str(config), "run").returncode == 0
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "cachewarm", "--config", str(config), "status"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (128 + signal.SIGPIPE, "")


def test_status_with_the_redis_lock_and_redis_down_says_lock_unknown(
    make_config: MakeConfig, redis_server: Server
) -> None:
    config = make_config(redis_url=redis_server.url, lock="redis", connect_timeout=2)
    assert cachewarm("--config", str(config), "run").returncode == 0
    redis_server.stop()
    human = cachewarm("--config", str(config), "status")
    assert human.returncode == 1
    assert "lock: unknown" in human.stdout and "lock: free" not in human.stdout
    report = json.loads(cachewarm("--config", str(config), "status", "--json").stdout)
    assert (report["lock"], report["lock_known"]) == (None, False)
    assert report["runs"][-1]["status"] == "ok"


def test_status_withholds_an_old_record_that_holds_the_password(
    make_config: MakeConfig, shop_db: ShopDB
) -> None:
    """A record written before a password was configured, or by an older version."""
    config = make_config()
    assert cachewarm("--config", str(config), "run").returncode == 0
    log = config.with_name("runs.jsonl")
    record = json.loads(log.read_text().splitlines()[-1])
    record |= {"status": "failed", "error": "cannot connect to MySQL at db/shop: Pw-77c1e2 refused"}
    with log.open("a") as f:
        f.write(json.dumps(record) + "\n")
    result = cachewarm(
        "--config", str(config), "status", env={"CACHEWARM_MYSQL_PASSWORD": "Pw-77c1e2"}
    )
    assert "Pw-77c1e2" not in result.stdout and WITHHELD in result.stdout


# --- passwords -----------------------------------------------------------------------------------


def test_malformed_url_with_a_password_fails_at_load_and_leaves_no_trace(
    make_config: MakeConfig, mysql_url: str, shop_db: ShopDB
) -> None:
    host = mysql_url.split("@")[-1]
    config = make_config(mysql_url=f"mysql:/root:Pw-3a9f1c@{host}/{shop_db.name}")
    for args in (("run",), ("-v", "run"), ("status",), ("status", "--json")):
        result = cachewarm("--config", str(config), *args)
        assert result.returncode == 2, (args, result.stderr)
        line = one_line(result.stderr)
        assert "[mysql] url is malformed" in line and "Pw-3a9f1c" not in line + result.stdout
    assert not config.with_name("runs.jsonl").exists()


NON_ASCII_PW = "Wärme-€-9f2c"


@pytest.fixture
def euro_user(shop_db: ShopDB, mysql_url: str) -> Iterator[str]:
    """A MariaDB user whose password holds '€' (three bytes in UTF-8, none in latin1)."""
    user = f"cw_{shop_db.name[-8:]}"
    admin = seed.connect(mysql_url, server_only=True, local_infile=False)  # utf8mb4
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (NON_ASCII_PW,))
        cur.execute(f"GRANT SELECT ON `{shop_db.name}`.* TO '{user}'@'%'")
    try:
        yield f"mysql://{user}@{mysql_url.split('@')[-1]}/{shop_db.name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER '{user}'@'%'")
        admin.close()


@pytest.mark.parametrize("driver", ["pymysql", "mysqlclient"])
def test_non_ascii_mysql_password_works_with_both_drivers(
    make_config: MakeConfig, euro_user: str, driver: str
) -> None:
    env = {"CACHEWARM_MYSQL_PASSWORD": NON_ASCII_PW}
    config = make_config(mysql_url=euro_user, driver=driver)
    result = cachewarm("--config", str(config), "run", env=env)
    assert (result.returncode, result.stderr) == (0, "")
    wrong = cachewarm("--config", str(config), "run", env={"CACHEWARM_MYSQL_PASSWORD": "Wärme"})
    assert wrong.returncode == 1 and "Access denied" in wrong.stderr  # the password is checked


@pytest.mark.parametrize("driver", ["pymysql", "mysqlclient"])
def test_non_ascii_password_in_my_cnf_works_or_fails_without_showing_it(
    make_config: MakeConfig, euro_user: str, driver: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".my.cnf").write_text(f"[client]\npassword={NON_ASCII_PW}\n", encoding="utf-8")
    config = make_config(mysql_url=euro_user, driver=driver)
    result = cachewarm("--config", str(config), "run", env={"HOME": str(home)})
    if driver == "mysqlclient":  # the C client sends the file's bytes as they are
        assert (result.returncode, result.stderr) == (0, "")
        return
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "has characters PyMySQL cannot send" in line
    for part in ("€", "\\u20ac", "Wärme", "position"):
        assert part not in line
    with contextlib.suppress(FileNotFoundError):
        assert "Wärme" not in config.with_name("runs.jsonl").read_text()
