"""The file lock: never followed through a symlink, per-user by default, released on
every way out, and never silently skipped when flock itself fails."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
import redis

import cachewarm as cw
from cachewarm import lock
from cachewarm.errors import LockError
from tests.helpers import (
    MakeConfig,
    MakeSettings,
    cachewarm,
    cachewarm_here,
    lock_is_free,
    one_line,
    runs,
)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
def test_symlinked_lockfile_is_refused(
    make_config: MakeConfig,
    tmp_path: Path,
    redis_client: redis.Redis,
    key_prefix: str,
    dangling: bool,
) -> None:
    target = tmp_path / "precious.txt"
    if not dangling:
        target.write_bytes(b"do not touch\n")
        target.chmod(0o644)
    link = tmp_path / "evil.lock"
    link.symlink_to(target)
    config = make_config(lockfile=str(link))
    result = cachewarm_here("--config", str(config), "run")
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        f"cachewarm: error: lockfile {link} is a symlink; refusing to use it"
    )
    if dangling:
        assert not target.exists()
    else:
        assert target.read_bytes() == b"do not touch\n"
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert list(redis_client.scan_iter(match=f"{key_prefix}:*")) == []
    assert runs(config)[-1]["status"] == "failed"


@pytest.mark.parametrize("base", ["xdg", "home"])
def test_default_lockfile_and_run_log_are_per_user(
    make_config: MakeConfig, tmp_path: Path, key_prefix: str, base: str
) -> None:
    config = make_config(lockfile="", log="")
    home = tmp_path / "home"
    home.mkdir()
    if base == "xdg":
        env = {"XDG_STATE_HOME": str(tmp_path / "state"), "HOME": str(home)}
        state = tmp_path / "state" / "cachewarm"
    else:
        env = {"XDG_STATE_HOME": "", "HOME": str(home)}
        state = home / ".local" / "state" / "cachewarm"
    result = cachewarm("--config", str(config), "run", env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in state.iterdir()) == [
        f"{key_prefix}-v1.lock",
        f"{key_prefix}-v1.runs.jsonl",
    ]
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / f"{key_prefix}-v1.lock").stat().st_mode) == 0o600
    record = json.loads((state / f"{key_prefix}-v1.runs.jsonl").read_text())
    assert record["status"] == "ok"
    status = cachewarm("--config", str(config), "status", "--json", env=env)
    assert json.loads(status.stdout)["runlog"] == str(state / f"{key_prefix}-v1.runs.jsonl")


OUTCOMES: dict[str, tuple[dict[str, object], int]] = {
    "ok": ({}, 0),
    "listing-query-error": ({"listing_query": "SELECT nope FROM products WHERE id IN %(ids)s"}, 1),
    "hot-query-error": ({"hot_query": "SELECT name FROM products LIMIT %(limit)s"}, 1),
    "redis-unreachable": ({"redis_url": "redis://127.0.0.1:1/0", "redis_connect_timeout": 1}, 1),
}


@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_lock_is_released_on_every_way_out(make_config: MakeConfig, outcome: str) -> None:
    overrides, code = OUTCOMES[outcome]
    config = make_config(**overrides)
    result = cachewarm_here("--config", str(config), "run")
    assert result.returncode == code, result.stderr
    lockfile = config.with_name("cw.lock")
    assert lock.file_lock_holder(lockfile) is None
    assert lock_is_free(lockfile)
    assert lockfile.read_bytes() == b""  # no stale holder for an operator to puzzle over
    follow = cachewarm_here("--config", str(make_config()), "run")
    assert follow.returncode == 0, follow.stderr
    assert [r["status"] for r in runs(config)] == ["ok" if code == 0 else "failed", "ok"]


@pytest.mark.parametrize("err", [errno.ENOLCK, errno.EOPNOTSUPP, errno.EIO])
def test_flock_failure_is_a_lock_error_never_an_unlocked_run(
    make_settings: MakeSettings,
    redis_client: redis.Redis,
    key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    err: int,
) -> None:
    s = make_settings()

    def broken(fd: int, operation: int) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(fcntl, "flock", broken)
    with pytest.raises(LockError, match=f"cannot lock {s.lockfile}: {os.strerror(err)}"):
        cw.warm(s)
    assert list(redis_client.scan_iter(match=f"{key_prefix}:*")) == []
    record = json.loads(s.runlog.read_text().splitlines()[-1])
    assert record["status"] == "failed"
    assert record["error"].startswith(f"cannot lock {s.lockfile}")


@pytest.mark.parametrize(
    "leftover",
    ["garbage", "dead-pid", "live-pid", "huge", "empty"],
)
@pytest.mark.slow
def test_leftover_lockfile_does_not_block_the_next_run(
    make_config: MakeConfig, leftover: str
) -> None:
    """flock decides, not what an earlier run left in the file."""
    config = make_config()
    lockfile = config.with_name("cw.lock")
    holder = {"run_id": "0ld", "host": os.uname().nodename, "started_at": "2020-01-01T00:00:00Z"}
    content = {
        "garbage": b"\x00\xff{not json\n",
        "dead-pid": json.dumps({**holder, "pid": dead_pid()}).encode(),
        "live-pid": json.dumps({**holder, "pid": os.getpid()}).encode(),  # pid reused
        "huge": os.urandom(1 << 20),
        "empty": b"",
    }[leftover]
    lockfile.write_bytes(content)
    status = cachewarm("--config", str(config), "status")
    assert "lock: free" in status.stdout
    result = cachewarm("--config", str(config), "run")
    assert result.returncode == 0, result.stderr
    assert runs(config)[-1]["status"] == "ok"
    assert lock_is_free(lockfile)
