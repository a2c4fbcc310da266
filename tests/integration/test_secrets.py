"""Passwords never leave the process: not in output, logs (-v, JSON), the run log, the
metrics file, the lockfile, `status --json`, exceptions or reprs; and a config file that
holds one but is readable by others draws a warning."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import seed
from servers import Server

import cachewarm as cw
from cachewarm import load_settings
from cachewarm.errors import CachewarmError
from tests.helpers import MakeConfig, ShopDB, cachewarm, cachewarm_here, one_line

MYSQL_PW = "Sql-Pw-4f9c2e"
REDIS_PW = "Rds-Pw-8a1b7d"


@dataclass(frozen=True)
class Guarded:
    mysql_url: str  # with the password in it
    redis_url: str  # likewise
    mysql_url_bare: str  # without: the password comes from the environment


@pytest.fixture
def guarded(shop_db: ShopDB, mysql_url: str, redis_server: Server) -> Iterator[Guarded]:
    """A MySQL user and a private Redis that both require a password."""
    user = f"cw_{shop_db.name[-8:]}"
    admin = seed.connect(mysql_url, server_only=True, local_infile=False)
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{MYSQL_PW}'")
        cur.execute(f"GRANT SELECT ON `{shop_db.name}`.* TO '{user}'@'%'")
    client = redis.Redis.from_url(redis_server.url)
    client.config_set("requirepass", REDIS_PW)
    client.close()
    host = mysql_url.split("@")[-1]
    try:
        yield Guarded(
            mysql_url=f"mysql://{user}:{MYSQL_PW}@{host}/{shop_db.name}",
            redis_url=redis_server.url.replace("redis://", f"redis://:{REDIS_PW}@"),
            mysql_url_bare=f"mysql://{user}@{host}/{shop_db.name}",
        )
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER '{user}'@'%'")
        admin.close()


def assert_no_secret(where: str, text: str) -> None:
    for secret in (MYSQL_PW, REDIS_PW):
        assert secret not in text, f"{secret} leaked into {where}: {text[:2000]}"


@pytest.mark.slow
def test_passwords_never_shown_anywhere(
    make_config: MakeConfig, guarded: Guarded, tmp_path: Path
) -> None:
    metrics_file = tmp_path / "cachewarm.prom"
    config = make_config(
        mysql_url=guarded.mysql_url, redis_url=guarded.redis_url, metrics_file=str(metrics_file)
    )
    redis_lock = make_config(mysql_url=guarded.mysql_url, redis_url=guarded.redis_url, lock="redis")
    failing = make_config(
        mysql_url=guarded.mysql_url,
        redis_url=guarded.redis_url,
        listing_query="SELECT nope FROM products WHERE id IN %(ids)s",
    )
    from_env = make_config(mysql_url=guarded.mysql_url_bare, redis_url=guarded.redis_url)
    env = {"CACHEWARM_MYSQL_PASSWORD": MYSQL_PW}
    loud = ("-v", "--log-format", "json")
    invocations: list[tuple[Path, tuple[str, ...], int]] = [
        (config, ("run",), 0),
        (config, (*loud, "run"), 0),
        (config, ("-v", "--log-format", "console", "run", "--full"), 0),
        (config, (*loud, "run", "--dry-run"), 0),
        (config, (*loud, "invalidate", "--rewarm", "1", "2"), 0),
        (config, (*loud, "show", "1"), 0),
        (config, ("status",), 0),
        (config, ("-v", "status", "--json"), 0),
        (redis_lock, (*loud, "run"), 0),
        (failing, (*loud, "run"), 1),
        (failing, ("-v", "run"), 1),
        (from_env, (*loud, "run"), 0),
    ]
    logged_events = 0
    for path, args, code in invocations:
        result = cachewarm("--config", str(path), *args, env=env)
        assert result.returncode == code, (args, result.stderr)
        assert_no_secret(f"{args} output", result.stdout + result.stderr)
        logged_events += result.stderr.count('"event"')
    assert logged_events > 20  # the loud runs really did log their events
    status = json.loads(cachewarm("--config", str(config), "status", "--json").stdout)
    assert status["runs"] and status["hot"]["size"] > 0
    for leftover in (config.with_name("runs.jsonl"), config.with_name("cw.lock"), metrics_file):
        assert leftover.exists()
        assert_no_secret(str(leftover), leftover.read_text(errors="replace"))


def test_passwords_not_in_reprs_or_exceptions(make_config: MakeConfig, guarded: Guarded) -> None:
    config = make_config(
        mysql_url=guarded.mysql_url.rsplit("/", 1)[0] + "/no_such_db",
        redis_url=guarded.redis_url,
    )
    settings = load_settings(config, env={})
    assert sorted(settings.secrets()) == sorted([MYSQL_PW, REDIS_PW])  # really configured
    for shown in (repr(settings), str(settings), repr(settings.mysql), repr(settings.redis)):
        assert_no_secret("a repr", shown)
    with pytest.raises(CachewarmError) as failed:
        cw.warm(settings)
    assert "no_such_db" in str(failed.value)
    assert_no_secret("the exception", f"{failed.value!s} {failed.value!r} {failed.value.args}")
    assert_no_secret("the run log", settings.runlog.read_text())
    assert_no_secret("status()", json.dumps(cw.status(settings).to_dict()))


@pytest.mark.parametrize(
    ("mode", "warned"), [(0o600, False), (0o400, False), (0o640, True), (0o644, True)]
)
@pytest.mark.parametrize("where", ["mysql-url", "redis-url", "password-key"])
def test_config_readable_by_others_with_a_password_warns(
    make_config: MakeConfig, guarded: Guarded, mode: int, warned: bool, where: str
) -> None:
    bare_redis = guarded.redis_url.replace(f":{REDIS_PW}@", "")
    options: dict[str, dict[str, object]] = {
        "mysql-url": {"mysql_url": guarded.mysql_url, "redis_url": bare_redis},
        "redis-url": {"mysql_url": guarded.mysql_url_bare, "redis_url": guarded.redis_url},
        "password-key": {
            "mysql_url": guarded.mysql_url_bare,
            "mysql_password": MYSQL_PW,
            "redis_url": bare_redis,
        },
    }
    overrides = options[where]
    env = {"CACHEWARM_MYSQL_PASSWORD": MYSQL_PW, "CACHEWARM_REDIS_PASSWORD": REDIS_PW}
    config = make_config(**overrides)
    config.chmod(mode)
    result = cachewarm_here("--config", str(config), "run", env=env)
    assert result.returncode == 0, result.stderr
    assert_no_secret("stderr", result.stderr)
    if warned:
        line = one_line(result.stderr)
        assert line.startswith("cachewarm: warning: config file ")
        assert str(config) in line and "chmod 600" in line
    else:
        assert result.stderr == ""


def test_config_without_a_password_may_be_world_readable(
    make_config: MakeConfig, guarded: Guarded
) -> None:
    config = make_config(
        mysql_url=guarded.mysql_url_bare, redis_url=guarded.redis_url.replace(f":{REDIS_PW}@", "")
    )
    config.chmod(0o644)
    env = {"CACHEWARM_MYSQL_PASSWORD": MYSQL_PW, "CACHEWARM_REDIS_PASSWORD": REDIS_PW}
    result = cachewarm_here("--config", str(config), "run", env=env)
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize("password", ["pa/ss-7c1", "pa#ss-7c1", "pa?ss-7c1"])
@pytest.mark.parametrize("scheme", ["mysql", "redis"])
def test_unencoded_url_password_never_shown(
    make_config: MakeConfig, scheme: str, password: str
) -> None:
    url = (
        f"mysql://u:{password}@127.0.0.1:1/shop"
        if scheme == "mysql"
        else f"redis://:{password}@127.0.0.1:1/0"
    )
    config = make_config(**{f"{scheme}_url": url, "connect_timeout": 1})
    for args in (("run",), ("status", "--json")):
        result = cachewarm_here("--config", str(config), *args)
        if args == ("run",):  # status reads no MySQL, so only run must fail here
            assert result.returncode != 0
        assert "ss-7c1" not in result.stdout + result.stderr  # nor the part after the char
