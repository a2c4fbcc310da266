"""Settings resolution: precedence, validation, and secrets that never show."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachewarm.config import load_settings
from cachewarm.errors import ConfigError
from cachewarm.urls import Secret, mysql_target, redact_url


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cachewarm.toml"
    path.write_text(text)
    return path


def test_defaults_without_file() -> None:
    s = load_settings(env={})
    assert s.warm.limit == 1000
    assert s.keys.prefix == "cachewarm"
    assert s.lockfile.name == "cachewarm-v1.lock"


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    path = write(
        tmp_path, "[warm]\nlimit = 10\nttl = 60\nbatch_size = 7\n[run]\nmax_seconds = 30\n"
    )
    s = load_settings(
        path,
        env={"CACHEWARM_WARM_LIMIT": "20", "CACHEWARM_WARM_TTL": "120"},
        overrides={("warm", "limit"): 30, ("warm", "ttl"): None},
    )
    assert (s.warm.limit, s.warm.ttl, s.warm.batch_size) == (30, 120, 7)


def test_config_path_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, '[keys]\nprefix = "shop"\n')
    assert load_settings(env={"CACHEWARM_CONFIG": str(path)}).keys.prefix == "shop"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[nope]\nx = 1\n", "unknown section [nope]"),
        ("[warm]\nlimt = 1\n", "unknown key 'limt' in [warm]"),
        ('[warm]\nlimit = "many"\n', "[warm] limit: expected an integer, got 'many'"),
        ("[warm]\nlimit = 0\n", "[warm] limit must be positive"),
        ("[warm\n", "is not valid TOML"),
        ('[keys]\nprefix = "a b"\n', "[keys] prefix may only hold"),
        ('[run]\nlock = "zookeeper"\n', '[run] lock must be "file" or "redis"'),
        ('[mysql]\nurl = "postgres://x/y"\n', "[mysql] url must start with mysql://"),
        ('[mysql]\nurl = "mysql://h:3306/"\n', "[mysql] url names no database"),
        ('[redis]\nurl = "http://h"\n', "[redis] url must start with redis://"),
    ],
)
def test_bad_file_names_the_culprit(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(write(tmp_path, text), env={})
    assert message in str(info.value)
    assert info.value.exit_code == 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml", env={})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CACHEWARM_WARM_LIMT", "1", "unknown environment variable CACHEWARM_WARM_LIMT"),
        ("CACHEWARM_WARM_TTL", "soon", "CACHEWARM_WARM_TTL: expected an integer"),
        ("CACHEWARM_MYSQL_SSL_VERIFY_IDENTITY", "maybe", "expected true or false"),
    ],
)
def test_bad_env_names_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={name: value})
    assert message in str(info.value)


def test_url_password_becomes_a_secret_and_never_shows(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[mysql]\nurl = "mysql://shop:s3cr%40t@db:3307/shop"\n'
        '[redis]\nurl = "redis://:r3dis-pw@cache:6380/2"\n',
    )
    s = load_settings(path, env={})
    assert "s3cr" not in repr(s) and "r3dis-pw" not in repr(s)
    assert s.mysql.url == "mysql://shop@db:3307/shop"
    assert s.redis.url == "redis://cache:6380/2"
    assert sorted(s.secrets()) == ["r3dis-pw", "s3cr@t"]
    target = mysql_target(s.mysql.url, s.mysql.password)
    assert target.password == Secret("s3cr@t")
    assert "s3cr" not in target.display()


def test_env_password_wins_over_url() -> None:
    s = load_settings(
        env={
            "CACHEWARM_MYSQL_URL": "mysql://u:from-url@h/db",
            "CACHEWARM_MYSQL_PASSWORD": "from-env",
        }
    )
    assert s.mysql.password == Secret("from-env")


def test_redact_url() -> None:
    assert redact_url("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"


@given(st.dictionaries(st.sampled_from(["limit", "ttl", "batch_size"]), st.text(max_size=12)))
def test_env_values_either_load_or_fail_with_config_error(values: dict[str, str]) -> None:
    """Whatever lands in the environment, the outcome is a Settings or a ConfigError."""
    env = {f"CACHEWARM_WARM_{k.upper()}": v for k, v in values.items()}
    try:
        s = load_settings(env=env)
    except ConfigError as exc:
        assert "CACHEWARM_WARM_" in str(exc) or "[warm]" in str(exc)
    else:
        assert s.warm.limit > 0 and s.warm.ttl > 0 and s.warm.batch_size > 0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CACHEWARM_REDIS_URL": "redis://h:1/abc"}, "it must be a number"),
        ({"CACHEWARM_REDIS_URL": "redis://h:1/0?password=hunter2"}, "must not carry ?password="),
        ({"CACHEWARM_RUN_MAX_SECONDS": "inf"}, "max_seconds must be positive and finite"),
        ({"CACHEWARM_WARM_TTL": "60"}, "ttl must be at least run.max_seconds"),
    ],
)
def test_dangerous_values_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)
