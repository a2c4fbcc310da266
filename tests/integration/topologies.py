"""Fixtures for Redis topologies beyond one server: a 3-master cluster and a Sentinel setup.

A test module switches the usual fixtures (`redis_url`, `redis_client`, `key_prefix`,
`make_config`) to a topology by overriding them with `cluster_overrides` or
`sentinel_overrides`; the guarantee tests it imports then run there unchanged.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import servers
from redis.cluster import RedisCluster


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.RedisCluster]:
    """A 3-master Redis Cluster shared by the session (tests use unique key prefixes)."""
    cluster = servers.start_redis_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[servers.RedisCluster]:
    """A cluster of this test's own, for stopping nodes and moving slots."""
    cluster = servers.start_redis_cluster(tmp_path / "cluster")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_sentinel(tmp_path: Path) -> Iterator[servers.RedisSentinel]:
    """Master, replica and one sentinel of this test's own (failovers change them)."""
    setup = servers.start_redis_sentinel(tmp_path / "sentinel")
    try:
        yield setup
    finally:
        setup.stop()


def cluster_client(url: str) -> RedisCluster:
    return RedisCluster.from_url(url)


def delete_prefix_everywhere(client: RedisCluster, prefix: str) -> None:
    """Every `prefix:*` key on every master, deleted key by key (slots differ)."""
    for key in list(client.scan_iter(match=f"{prefix}:*")):
        client.delete(key)


def prefix_cleanup(client: redis.Redis | RedisCluster) -> Iterator[str]:
    prefix = f"cwtest-{secrets.token_hex(6)}"
    yield prefix
    if isinstance(client, RedisCluster):
        delete_prefix_everywhere(client, prefix)
    else:
        servers.delete_prefix(client, prefix)


def node_client(node: servers.Server) -> redis.Redis:
    return redis.Redis(host=node.host, port=node.port)


def slot_owner(
    cluster: servers.RedisCluster, slot: int, via: servers.Server | None = None
) -> servers.Server:
    """The master serving `slot` now, as `via` (default: the first node) sees it."""
    client = node_client(via or cluster.nodes[0])
    try:
        ranges = client.cluster("SLOTS")
    finally:
        client.close()
    for start, end, master, *_ in ranges:
        if start <= slot <= end:
            port = int(master[1])
            return next(n for n in cluster.nodes if n.port == port)
    raise AssertionError(f"slot {slot} is not served")


class SlotMove:
    """One slot moved between masters the way `redis-cli --cluster reshard` does, in steps."""

    def __init__(self, cluster: servers.RedisCluster, slot: int) -> None:
        self.cluster, self.slot = cluster, slot
        self.source = slot_owner(cluster, slot)
        self.target = next(n for n in cluster.nodes if n is not self.source)
        self._src, self._dst = node_client(self.source), node_client(self.target)
        self._src_id = self._src.cluster("MYID")
        self._dst_id = self._dst.cluster("MYID")

    def mark(self) -> None:
        """IMPORTING on the target, MIGRATING on the source: clients now get ASK/TRYAGAIN."""
        self._dst.cluster("SETSLOT", self.slot, "IMPORTING", self._src_id)
        self._src.cluster("SETSLOT", self.slot, "MIGRATING", self._dst_id)

    def move_keys(self) -> None:
        keys = self._src.cluster("GETKEYSINSLOT", self.slot, 10_000)
        if keys:
            self._src.migrate(self.target.host, self.target.port, keys, 0, 5000)

    def finish(self) -> None:
        """Give the slot to the target on every node: clients now get MOVED."""
        for node in self.cluster.nodes:
            client = node_client(node)
            try:
                client.cluster("SETSLOT", self.slot, "NODE", self._dst_id)
            finally:
                client.close()
        self._src.close()
        self._dst.close()


@pytest.fixture(scope="session")
def shared_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.RedisSentinel]:
    """A Sentinel setup no test fails over: for the guarantee tests run through Sentinel."""
    setup = servers.start_redis_sentinel(tmp_path_factory.mktemp("sentinel"))
    try:
        yield setup
    finally:
        setup.stop()


def sentinel_settings(setup: servers.RedisSentinel) -> dict[str, object]:
    """make_config keywords that reach `setup`'s master through its sentinels."""
    return {"mode": "sentinel", "sentinels": setup.seeds, "service_name": setup.service_name}
