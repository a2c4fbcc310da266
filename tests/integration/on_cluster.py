"""The usual fixtures (`redis_url`, `redis_client`, `key_prefix`, `make_config`,
`redis_mode`) pointed at the session's 3-master cluster.

A test module imports them by name to run its tests, or the single-Redis tests it
imports, against the cluster unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import servers
from redis.cluster import RedisCluster

from tests.helpers import MakeConfig
from tests.integration.topologies import cluster_client, prefix_cleanup


@pytest.fixture(scope="session")
def redis_url(redis_cluster: servers.RedisCluster) -> str:
    return redis_cluster.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[RedisCluster]:
    client = cluster_client(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    client = cluster_client(redis_url)
    try:
        yield from prefix_cleanup(client)
    finally:
        client.close()


@pytest.fixture
def make_config(make_config: MakeConfig) -> MakeConfig:
    return lambda **overrides: make_config(**{"mode": "cluster", **overrides})


@pytest.fixture
def redis_mode() -> str:
    return "cluster"
