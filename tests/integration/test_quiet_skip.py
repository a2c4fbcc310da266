"""A skip does not mail: the crontab.example line, run the way cron runs it, is silent
while the lock's holder is within its deadline, and one error line once it is stuck.

Cron runs the line with `/bin/sh -c`, a minimal environment, no terminal and its
output captured (and mailed when there is any); `cron_run` does exactly that with the
line copied from crontab.example, only the three installation paths pointed at the test.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from pymysql.connections import Connection

from cachewarm import lock
from cachewarm.keys import Keys
from tests.helpers import (
    MakeConfig,
    gate,
    on_a_terminal,
    one_line,
    running,
    runs,
    start,
    wait_for_lock_holder,
)

ROOT = Path(__file__).resolve().parents[2]
CRON_TIME = re.compile(r"^(\S+\s+){5}")


def crontab_command() -> str:
    """The command part of the one job line in crontab.example."""
    jobs = [
        line
        for line in (ROOT / "crontab.example").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(jobs) == 1, jobs
    return CRON_TIME.sub("", jobs[0])


def cron_run(config: Path, env_file: Path) -> subprocess.CompletedProcess[str]:
    """The crontab line as cron runs it: sh -c, cron's environment, no terminal."""
    command = (
        crontab_command()
        .replace("/etc/cachewarm.env", str(env_file))
        .replace(
            "/opt/cachewarm/.venv/bin/cachewarm", str(Path(sys.executable).parent / "cachewarm")
        )
        .replace("/etc/cachewarm.toml", str(config))
    )
    cron_env = {
        "HOME": os.environ.get("HOME", "/"),
        "LOGNAME": os.environ.get("LOGNAME", "root"),
        "SHELL": "/bin/sh",
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        ["/bin/sh", "-c", command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=cron_env,
        start_new_session=True,  # no controlling terminal, as under crond
        timeout=60,
        check=False,
    )


@pytest.fixture
def env_file(tmp_path: Path, redis_url: str) -> Path:
    """/etc/cachewarm.env of the test: real settings the line's `set -a; .` must export."""
    path = tmp_path / "cachewarm.env"
    path.write_text(f"CACHEWARM_REDIS_URL={redis_url}\nCACHEWARM_RUN_MAX_SECONDS=600\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def holder(make_config: MakeConfig, shop_conn: Connection) -> Iterator[tuple[Path, int]]:
    """A real run holding the lock, blocked in its hot query until the test ends."""
    with gate(shop_conn) as held:
        config = make_config(hot_query=held.hot_query)
        with running(start("--config", str(config), "run")) as proc:
            wait_for_lock_holder(config.with_name("cw.lock"))
            yield config, proc.pid
            held.open()
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err


def test_the_crontab_line_works_under_cron(make_config: MakeConfig, env_file: Path) -> None:
    """The harness itself: the line runs a real warm, silently, with the env file's settings."""
    config = make_config(redis_url="redis://127.0.0.1:1/0")  # only the env file's URL works
    result = cron_run(config, env_file)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert runs(config)[-1]["status"] == "ok"


def test_the_crontab_line_runs_without_an_env_file(make_config: MakeConfig, tmp_path: Path) -> None:
    """~/.my.cnf users have no env file: the line must not stop at sourcing it."""
    config = make_config()
    result = cron_run(config, tmp_path / "no-such.env")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert runs(config)[-1]["status"] == "ok"


def test_an_env_file_value_in_single_quotes_reaches_cachewarm_as_written(
    make_config: MakeConfig, tmp_path: Path, redis_url: str
) -> None:
    """The documented form: what sh's `.` makes of NAME='value' with $, #, spaces, " and \\."""
    awkward = 'p a$HOME#x"y\\z'
    env_file = tmp_path / "cachewarm.env"
    env_file.write_text(
        f"CACHEWARM_REDIS_URL='{redis_url}'\nCACHEWARM_MYSQL_PASSWORD='{awkward}'\n"
    )
    config = make_config(redis_url="redis://127.0.0.1:1/0")
    result = cron_run(config, env_file)
    # The shop's MySQL account has no password: a wrong one is refused, naming no secret.
    assert result.returncode == 1
    assert "Access denied" in result.stderr and awkward not in result.stderr
    shown = subprocess.run(
        ["/bin/sh", "-c", f"set -a; . {env_file}; set +a; printenv CACHEWARM_MYSQL_PASSWORD"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout == awkward + "\n"


def test_cron_skip_is_silent_while_the_holder_is_within_its_deadline(
    holder: tuple[Path, int], env_file: Path
) -> None:
    config, holder_pid = holder
    result = cron_run(config, env_file)
    assert (result.returncode, result.stdout, result.stderr) == (75, "", "")
    skip = runs(config)[-1]
    assert skip["status"] == "skipped"
    assert f"pid {holder_pid}" in str(skip["error"])


def test_skip_on_a_terminal_still_says_so(holder: tuple[Path, int]) -> None:
    config, holder_pid = holder
    code, screen = on_a_terminal("--config", str(config), "run")
    assert code == 75
    assert "cachewarm: skipped: lock " in screen
    assert f"pid {holder_pid}" in screen


def stuck_info(run_id: str, max_seconds: float, late_s: float) -> dict[str, object]:
    """Holder info as lock.holder_info writes it, started `late_s` past deadline + margin."""
    age = max_seconds + lock.STUCK_MARGIN_S + late_s
    info = lock.holder_info(run_id, max_seconds)
    return {**info, "boot_s": info["boot_s"] - age}


def test_cron_skip_of_a_stuck_file_lock_holder_is_one_error_line(
    make_config: MakeConfig, env_file: Path, tmp_path: Path
) -> None:
    """A holder that outlived its deadline (frozen, say) holds the flock: an error, exit 1."""
    config = make_config()
    lockfile = tmp_path / "cw.lock"
    fd = os.open(lockfile, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, json.dumps(stuck_info("frozen1", 300, late_s=120)).encode())
        result = cron_run(config, env_file)
    finally:
        os.close(fd)
    assert (result.returncode, result.stdout) == (1, "")
    line = one_line(result.stderr)
    assert line.startswith(f"cachewarm: error: lock {lockfile} is held by run frozen1 (pid ")
    assert "past its max_seconds (300 s): that run looks stuck" in line
    record = runs(config)[-1]
    assert (record["status"], record["error"]) == ("failed", line.split("error: ", 1)[1])


def test_cron_skip_of_a_stuck_redis_lock_holder_is_one_error_line(
    make_config: MakeConfig, env_file: Path, redis_client: redis.Redis, key_prefix: str
) -> None:
    config = make_config(lock="redis")
    key = Keys(key_prefix, 1).lock
    seconds, micros = redis_client.time()
    started_ms = seconds * 1000 + micros // 1000 - (60 + int(lock.STUCK_MARGIN_S) + 30) * 1000
    token = {
        **lock.holder_info("frozen2", 60),
        "boot_id": "another host",
        "token": "0" * 32,
        "started_ms": started_ms,
    }
    redis_client.set(key, json.dumps(token), px=60_000)
    result = cron_run(config, env_file)
    assert result.returncode == 1
    assert one_line(result.stderr).startswith(
        f"cachewarm: error: Redis lock {key} is held by run frozen2 (pid {os.getpid()} "
    )
    assert "past its max_seconds (60 s)" in result.stderr
    assert redis_client.get(key) == json.dumps(token).encode()  # a stuck holder is not evicted


Info = dict[str, object] | None
HOLDERS: dict[
    str, tuple[Callable[[], Info], bool]
] = {  # name: (holder info, built when the test runs; whether that holder is stuck)
    "past": (lambda: stuck_info("r", 600, late_s=5), True),
    "within-margin": (lambda: stuck_info("r", 600, late_s=-30), False),
    "null-deadline": (lambda: {**stuck_info("r", 600, late_s=5), "max_seconds": None}, False),
    "older-version": (
        lambda: {k: v for k, v in stuck_info("r", 600, late_s=5).items() if k != "max_seconds"},
        False,
    ),
    "garbage": (lambda: {"run_id": "r", "started_at": "garbage", "max_seconds": 1}, False),
    # Another host's file lock (over NFS) or one from before a reboot: its boot clock
    # says nothing here, and the wall clock is not trusted.
    "another-boot": (lambda: {**stuck_info("r", 600, late_s=5), "boot_id": "other"}, False),
    "no-info": (lambda: None, False),
}


@pytest.mark.parametrize("holder_kind", HOLDERS)
def test_only_a_holder_past_its_own_deadline_counts_as_stuck(holder_kind: str) -> None:
    make, stuck = HOLDERS[holder_kind]
    info = make()
    assert (lock.overdue_s(info) is not None) == stuck
    error = lock.held("lock x", info)
    assert type(error).__name__ == ("LockStuck" if stuck else "LockHeld")
