"""The command as operators and cron see it: exit codes, output, locking, secrets.

Most tests run the real console entry point in a subprocess (no terminal), exactly
as cron would, against the real servers.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import redis
import seed
from click.testing import CliRunner
from pymysql.connections import Connection

from cachewarm.cli import cli
from tests.helpers import (
    SLOW_HOT_QUERY,
    MakeConfig,
    ShopDB,
    cachewarm,
    gate,
    on_a_terminal,
    one_line,
    running,
    runs,
    snapshot,
    start,
    wait_for_lock_holder,
)


def test_successful_run_off_a_terminal_prints_nothing(make_config: MakeConfig) -> None:
    result = cachewarm("--config", str(make_config()), "run")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_config_from_env_and_flag_override(
    make_config: MakeConfig, redis_client: redis.Redis, key_prefix: str
) -> None:
    config = make_config()
    result = cachewarm("run", "--limit", "3", env={"CACHEWARM_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert len(json.loads(redis_client.get(f"{key_prefix}:v1:hot") or b"")) == 3


def test_dry_run_prints_a_report_and_writes_nothing(
    make_config: MakeConfig, redis_client: redis.Redis, key_prefix: str
) -> None:
    result = cachewarm("--config", str(make_config()), "run", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "dry run: nothing was written" in result.stdout
    assert "new" in result.stdout
    assert list(redis_client.scan_iter(match=f"{key_prefix}:*")) == []


@pytest.mark.slow
def test_show_and_status(
    make_config: MakeConfig, redis_client: redis.Redis, key_prefix: str
) -> None:
    config = str(make_config())
    assert cachewarm("--config", config, "run").returncode == 0
    top = json.loads(redis_client.get(f"{key_prefix}:v1:hot") or b"")[0]
    shown = cachewarm("--config", config, "show", str(top))
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["id"] == top
    stored = redis_client.get(f"{key_prefix}:v1:product:{top}")
    assert isinstance(stored, bytes) and shown.stdout.encode() == stored + b"\n"
    missing = cachewarm("--config", config, "show", "987654321")
    assert missing.returncode == 1 and "not cached" in missing.stderr
    status = cachewarm("--config", config, "status", "--json")
    report = json.loads(status.stdout)
    assert status.returncode == 0 and report["runs"][-1]["status"] == "ok"
    human = cachewarm("--config", config, "status")
    assert "hot list:" in human.stdout and "lock: free" in human.stdout


def test_status_lists_runs_in_the_order_they_started(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """The log is in the order runs ended: a long run that ended last started first."""
    log = tmp_path / "runs.jsonl"
    started = ["2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z", "2026-01-01T00:01:00Z"]
    log.write_text(
        "".join(
            json.dumps({"run_id": f"r{i}", "started_at": t}) + "\n" for i, t in enumerate(started)
        )
    )
    status = cachewarm("--config", str(make_config(log=str(log))), "status", "--json")
    assert [r["run_id"] for r in json.loads(status.stdout)["runs"]] == ["r0", "r2", "r1"]


def test_invalidate_from_stdin(
    make_config: MakeConfig, redis_client: redis.Redis, key_prefix: str
) -> None:
    config = str(make_config())
    cachewarm("--config", config, "run")
    ids = json.loads(redis_client.get(f"{key_prefix}:v1:hot") or b"")[:4]
    result = cachewarm("--config", config, "invalidate", "-", stdin="\n".join(map(str, ids)))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert not any(redis_client.exists(f"{key_prefix}:v1:product:{i}") for i in ids)


@pytest.mark.parametrize("bad", ["abc", "-5", "1.5", ""])
@pytest.mark.slow
def test_bad_ids_touch_nothing(
    make_config: MakeConfig, redis_client: redis.Redis, key_prefix: str, bad: str
) -> None:
    config = str(make_config())
    cachewarm("--config", config, "run")
    hot = json.loads(redis_client.get(f"{key_prefix}:v1:hot") or b"")
    before = snapshot(redis_client, key_prefix)
    result = cachewarm("--config", config, "invalidate", str(hot[0]), bad)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "invalid product id" in result.stderr
    assert redis_client.exists(f"{key_prefix}:v1:product:{hot[0]}")
    assert snapshot(redis_client, key_prefix) == before


def test_bad_config_exits_2_and_touches_nothing(
    tmp_path: Path, redis_client: redis.Redis, key_prefix: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'[keys]\nprefix = "{key_prefix}"\n[warm]\nlimit = "lots"\n')
    result = cachewarm("--config", str(config), "run")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"cachewarm: error: {config}: [warm] limit: expected an integer, got 'lots'"
    )
    assert list(redis_client.scan_iter(match=f"{key_prefix}:*")) == []
    missing = cachewarm("--config", str(tmp_path / "nope.toml"), "run")
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_overlapping_run_exits_75_quickly(make_config: MakeConfig, shop_conn: Connection) -> None:
    with gate(shop_conn) as held:  # the first run holds the lock until the gate opens
        config = make_config(hot_query=held.hot_query)
        with running(start("--config", str(config), "run")) as first:
            wait_for_lock_holder(config.with_name("cw.lock"))
            began = time.monotonic()
            second = cachewarm("--config", str(config), "run")
            elapsed = time.monotonic() - began
            assert second.returncode == 75
            assert second.stderr == ""  # off a terminal a skip is silent: nothing for cron to mail
            assert elapsed < 5  # "within a second" of its own work; interpreter start-up aside
            status = cachewarm("--config", str(config), "status", "--json")
            holder = json.loads(status.stdout)["lock"]
            assert holder["pid"] == first.pid
            human = cachewarm("--config", str(config), "status").stdout
            assert f"lock: held by run {holder['run_id']}, pid {first.pid}" in human
            held.open()
            first.communicate(timeout=60)
    assert first.returncode == 0
    assert [r["status"] for r in runs(config)] == ["skipped", "ok"]
    assert f"pid {first.pid}" in str(runs(config)[0]["error"])


def test_kill_9_mid_run_then_next_run_succeeds(
    make_config: MakeConfig, redis_client: redis.Redis, key_prefix: str
) -> None:
    config = make_config(hot_query=SLOW_HOT_QUERY)
    with running(start("--config", str(config), "run")) as victim:
        wait_for_lock_holder(config.with_name("cw.lock"))
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=10)
    assert not redis_client.exists(f"{key_prefix}:v1:hot")
    fast = make_config()
    result = cachewarm("--config", str(fast), "run")
    assert result.returncode == 0, result.stderr
    assert redis_client.exists(f"{key_prefix}:v1:hot")


def test_unreachable_mysql_is_one_line_exit_1(make_config: MakeConfig) -> None:
    config = make_config(mysql_url="mysql://root:pa55-unreach@127.0.0.1:1/shop", connect_timeout=2)
    result = cachewarm("--config", str(config), "run")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("cachewarm: error: cannot connect to MySQL at 127.0.0.1:1/shop")
    assert "pa55-unreach" not in result.stderr + result.stdout
    assert runs(config)[-1]["status"] == "failed"


def test_unreachable_redis_is_one_line_exit_1(make_config: MakeConfig) -> None:
    config = make_config(redis_url="redis://:r3d1s-pw@127.0.0.1:1/0")
    result = cachewarm("--config", str(config), "run")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        "cachewarm: error: cannot connect to Redis at redis://127.0.0.1:1/0"
    )
    assert "r3d1s-pw" not in result.stderr


def test_wrong_mysql_password_never_printed(
    make_config: MakeConfig, shop_db: ShopDB, mysql_url: str
) -> None:
    user = f"cw_{shop_db.name[-8:]}"
    admin = seed.connect(mysql_url, server_only=True, local_infile=False)
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'the-right-one'")
        cur.execute(f"GRANT SELECT ON `{shop_db.name}`.* TO '{user}'@'%'")
    try:
        host = mysql_url.split("@")[-1]
        config = make_config(mysql_url=f"mysql://{user}@{host}/{shop_db.name}")
        env = {"CACHEWARM_MYSQL_PASSWORD": "Wr0ng-Secret-Pw"}
        for args in (("run",), ("-v", "run"), ("--log-format", "json", "run", "--dry-run")):
            result = cachewarm("--config", str(config), *args, env=env)
            assert result.returncode == 1
            assert "Access denied" in result.stderr
            assert "Wr0ng-Secret-Pw" not in result.stderr + result.stdout
        assert "Wr0ng-Secret-Pw" not in config.with_name("runs.jsonl").read_text()
        good = cachewarm(
            "--config", str(config), "run", env={"CACHEWARM_MYSQL_PASSWORD": "the-right-one"}
        )
        assert good.returncode == 0, good.stderr
        home = config.parent / "home"  # no password anywhere else: ~/.my.cnf supplies it
        home.mkdir()
        (home / ".my.cnf").write_text("[client]\npassword=the-right-one\n")
        for driver in ("pymysql", "mysqlclient"):
            with_cnf = make_config(mysql_url=f"mysql://{user}@{host}/{shop_db.name}", driver=driver)
            result = cachewarm("--config", str(with_cnf), "run", env={"HOME": str(home)})
            assert result.returncode == 0, (driver, result.stderr)
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER '{user}'@'%'")
        admin.close()


def test_wrong_redis_password_never_printed(make_config: MakeConfig, redis_server: object) -> None:
    from servers import Server

    assert isinstance(redis_server, Server)
    client = redis.Redis.from_url(redis_server.url)
    client.config_set("requirepass", "right-redis-pw")
    client.close()
    config = make_config(redis_url=redis_server.url.replace("redis://", "redis://:WrongRedisPw@"))
    result = cachewarm("-v", "--config", str(config), "run")
    assert result.returncode == 1
    assert "WrongRedisPw" not in result.stderr + result.stdout
    assert "cannot connect to Redis" in result.stderr


def test_a_redis_that_wants_a_password_and_got_none_names_the_setting(
    make_config: MakeConfig, redis_server: object
) -> None:
    from servers import Server

    assert isinstance(redis_server, Server)
    client = redis.Redis.from_url(redis_server.url)
    client.config_set("requirepass", "right-redis-pw")
    client.close()
    result = cachewarm("--config", str(make_config(redis_url=redis_server.url)), "run")
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith("cachewarm: error: cannot connect to Redis at ")
    assert line.endswith(
        "(it wants a password and none is set: CACHEWARM_REDIS_PASSWORD or [redis] password)"
    )


def test_cli_runner_drives_the_same_commands(make_config: MakeConfig) -> None:
    config = str(make_config())
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", config, "run"]).exit_code == 0
    result = runner.invoke(cli, ["--config", config, "invalidate", "x1"])
    assert result.exit_code == 2
    assert "invalid product id 'x1'" in result.output


def test_a_terminal_gets_events_and_a_progress_bar(make_config: MakeConfig) -> None:
    code, screen = on_a_terminal("--config", str(make_config(batch_size=16)), "run")
    assert code == 0
    assert "warming" in screen
    assert "100%" in screen
    assert "run.finished" in screen
    quiet_code, quiet_screen = on_a_terminal("-q", "--config", str(make_config()), "run")
    assert (quiet_code, quiet_screen) == (0, "")
