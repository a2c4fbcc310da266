"""[redis] mode, nodes, sentinels, service_name: what loads, and what is refused (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachewarm.config import load_settings
from cachewarm.errors import ConfigError
from tests.helpers import cachewarm


def write(tmp_path: Path, redis: str) -> Path:
    path = tmp_path / "cachewarm.toml"
    path.write_text(f"[redis]\n{redis}\n")
    return path


def test_cluster_and_sentinel_settings_load(tmp_path: Path) -> None:
    cluster = load_settings(
        write(tmp_path, 'mode = "cluster"\nurl = "redis://a:7000"\nnodes = ["b:7001", "c:7002"]'),
        env={},
    )
    assert (cluster.redis.mode, cluster.redis.nodes) == ("cluster", ("b:7001", "c:7002"))
    sentinel = load_settings(
        env={
            "CACHEWARM_REDIS_MODE": "sentinel",
            "CACHEWARM_REDIS_SENTINELS": "s1:26379, s2:26379",
            "CACHEWARM_REDIS_SERVICE_NAME": "shop",
        }
    )
    assert sentinel.redis.sentinels == ("s1:26379", "s2:26379")
    assert sentinel.redis.service_name == "shop"


@pytest.mark.parametrize(
    ("redis", "message"),
    [
        ('mode = "clustered"', '[redis] mode must be "single", "cluster" or "sentinel"'),
        ('mode = "cluster"\nurl = "redis://a:7000/3"', "a Redis Cluster has only database 0"),
        ('mode = "cluster"\nurl = "unix:///tmp/r.sock"', "redis:// or rediss://"),
        ('mode = "sentinel"\nservice_name = "shop"', "[redis] sentinels is empty"),
        ('mode = "sentinel"\nsentinels = ["s:26379"]', "[redis] service_name is not set"),
        ('nodes = ["b:7001"]', '[redis] nodes applies only to mode = "cluster"'),
        ('sentinels = ["s:26379"]', "[redis] sentinels, service_name and sentinel_password"),
        ('sentinel_password = "pw"', "[redis] sentinels, service_name and sentinel_password"),
        ('mode = "cluster"\nnodes = ["no-port"]', "'no-port' in nodes/sentinels is not host:port"),
        ('mode = "cluster"\nnodes = "b:7001"', None),  # a string is one comma-separated list
        ("nodes = [1, 2]", "[redis] nodes: expected a list of strings"),
    ],
)
def test_bad_combinations_name_the_key(tmp_path: Path, redis: str, message: str | None) -> None:
    path = write(tmp_path, redis)
    if message is None:
        assert load_settings(path, env={}).redis.nodes == ("b:7001",)
        return
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert message in str(caught.value)


def test_cli_exits_2_on_a_bad_mode_before_connecting(tmp_path: Path) -> None:
    result = cachewarm("status", env={"CACHEWARM_REDIS_MODE": "sentinel", "CACHEWARM_CONFIG": ""})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "[redis] sentinels is empty" in result.stderr
