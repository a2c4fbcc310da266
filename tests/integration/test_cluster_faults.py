"""Redis Cluster faults during warms: nodes stopped or failing over, slots moving,
scripts flushed; each on a cluster of the test's own.

In a file of its own so it runs beside test_cluster's guarantee tests, not after them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import servers
from pymysql.connections import Connection
from redis.cluster import RedisCluster

import cachewarm as cw
from cachewarm.config import load_settings
from cachewarm.keys import Keys, key_slot
from cachewarm.store.scripts import ACROSS, WRITE
from tests.helpers import (
    MakeConfig,
    MakeSettings,
    cachewarm,
    one_line,
    running,
    runs,
    slow_listing_query,
    start,
    wait_for,
)
from tests.integration.on_cluster import key_prefix, make_config, redis_mode, redis_url
from tests.integration.test_reliability import finish
from tests.integration.test_warm import hot_ids
from tests.integration.topologies import SlotMove, cluster_client, node_client, slot_owner

__all__ = ["key_prefix", "make_config", "redis_mode", "redis_url"]


def script_calls(nodes: list[servers.Server]) -> list[int]:
    """EVAL and EVALSHA calls each node has served since its last CONFIG RESETSTAT."""
    return [
        info_count(n, "commandstats", "cmdstat_evalsha")
        + info_count(n, "commandstats", "cmdstat_eval")
        for n in nodes
    ]


def test_a_batch_is_one_script_call_per_node(
    make_settings: MakeSettings, private_cluster: servers.RedisCluster
) -> None:
    """Listings of many slots go in one script per node and batch, not one per slot."""
    nodes = private_cluster.nodes
    settings = make_settings(redis_url=private_cluster.url, batch_size=50)
    for node in nodes:
        client = node_client(node)
        client.config_resetstat()
        client.close()
    record = cw.warm(settings)
    assert record.status == "ok" and record.written > 100
    batches = -(-record.written // 50)
    calls = script_calls(nodes)
    # Per node: one write per batch, the slot states learned in 4096-key chunks, and the
    # publish on the hot key's node; one call per slot would be about one per listing.
    assert all(c > 0 for c in calls), calls
    assert sum(calls) <= len(nodes) * (batches + 2) + 1, (calls, batches)
    assert sum(calls) < record.written / 5, (calls, record.written)
    cluster = cluster_client(private_cluster.url)
    try:
        assert_every_hot_listing_current(cluster, settings.keys.prefix)
    finally:
        cluster.close()


@pytest.fixture
def slow_cluster_run(
    make_config: MakeConfig, private_cluster: servers.RedisCluster
) -> Iterator[tuple[Path, RedisCluster]]:
    """A config for a slow warm into a private cluster, and a client for that cluster."""
    config = make_config(
        redis_url=private_cluster.url, listing_query=slow_listing_query(0.02), batch_size=4
    )
    client = cluster_client(private_cluster.url)
    try:
        yield config, client
    finally:
        client.close()


def written(client: RedisCluster, prefix: str) -> int:
    return len(list(client.scan_iter(match=f"{prefix}:v1:product:*")))


def assert_every_hot_listing_current(client: RedisCluster, prefix: str) -> None:
    keys = Keys(prefix, 1)
    hot = json.loads(client.get(keys.hot) or b"[]")
    assert len(hot) > 100
    for product_id in hot:
        listing = json.loads(client.get(keys.product(product_id)) or b"null")
        assert listing is not None and listing["id"] == product_id


def kill_mid_run(config: Path, client: RedisCluster, prefix: str, victim: servers.Server) -> None:
    """Kill a master under a run writing to it: exit 1, one line, nothing published."""
    with running(start("--config", str(config), "run")) as proc:
        wait_for("the first batches", lambda: written(client, prefix) >= 8)
        victim.kill()
        code, _, err, _ = finish(proc, timeout=90)
    assert code == 1, err
    assert one_line(err).startswith("cachewarm: error: "), err
    assert "Redis" in err
    record = runs(config)[-1]
    assert (record["status"], record["hot_published"]) == ("failed", False)
    assert client.get(Keys(prefix, 1).hot) is None


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_a_master_stopped_mid_run_fails_the_run_and_publishes_nothing(
    slow_cluster_run: tuple[Path, RedisCluster],
    private_cluster: servers.RedisCluster,
    key_prefix: str,
) -> None:
    config, client = slow_cluster_run
    hot_key = Keys(key_prefix, 1).hot
    victim = next(
        n
        for n in private_cluster.nodes
        if n is not slot_owner(private_cluster, key_slot(hot_key.encode()))
    )
    kill_mid_run(config, client, key_prefix, victim)
    victim.restart()
    servers.wait_cluster_ok(private_cluster.nodes)
    again = cachewarm("--config", str(config), "run", timeout=90)
    assert again.returncode == 0, again.stderr


@pytest.mark.timeout(120)
def test_script_flush_mid_run_is_recovered(
    slow_cluster_run: tuple[Path, RedisCluster],
    private_cluster: servers.RedisCluster,
    key_prefix: str,
) -> None:
    config, client = slow_cluster_run
    with running(start("--config", str(config), "run")) as proc:
        wait_for("the first batches", lambda: written(client, key_prefix) >= 8)
        for node in private_cluster.nodes:
            flushing = node_client(node)
            flushing.script_flush()
            flushing.close()
        code, _, err, _ = finish(proc, timeout=90)
    assert code == 0, err
    assert_every_hot_listing_current(client, key_prefix)
    # Only an EVAL (the NOSCRIPT fallback) puts a script back in a flushed cache.
    spanning = ACROSS[WRITE].sha.decode()
    assert all(node_client(n).script_exists(spanning)[0] for n in private_cluster.nodes)


def info_count(node: servers.Server, section: str, name: str) -> int:
    """A counter from the node's INFO (errorstats: MOVED, ASK; commandstats: cmdstat_asking)."""
    client = node_client(node)
    try:
        stats = client.info(section).get(name, {})
    finally:
        client.close()
    if not isinstance(stats, dict):
        return 0
    return int(str(stats.get("count") or stats.get("calls") or 0))


@pytest.mark.timeout(120)
def test_slots_moving_during_a_warm(
    slow_cluster_run: tuple[Path, RedisCluster],
    private_cluster: servers.RedisCluster,
    shop_conn: Connection,
    key_prefix: str,
) -> None:
    """ASK while slots are half moved, MOVED once moved: the warm follows, or fails cleanly."""
    config, client = slow_cluster_run
    keys = Keys(key_prefix, 1)
    hot = hot_ids(shop_conn)

    def slots(ids: list[int]) -> set[int]:
        return {key_slot(keys.product(i).encode()) for i in ids}

    halfway = slots(hot[len(hot) // 3 : len(hot) // 2])
    moved = slots(hot[len(hot) * 3 // 4 :]) - halfway
    moves = [SlotMove(private_cluster, s) for s in sorted(halfway | moved)]
    with running(start("--config", str(config), "run")) as proc:
        wait_for("the first batches", lambda: written(client, key_prefix) >= 8)
        for move in moves:  # as `redis-cli --cluster reshard` does, some slower to finish
            move.mark()
            move.move_keys()
            if move.slot in moved:
                move.finish()
        wait_for(
            "the warm past the half-moved slots",
            lambda: written(client, key_prefix) >= len(hot) * 2 // 3 or proc.poll() is not None,
            timeout=60,
        )
        for move in moves:
            if move.slot in halfway:
                move.finish()
        code, _, err, _ = finish(proc, timeout=90)
    if code != 0:  # failing cleanly is allowed; then the next run must succeed
        assert code == 1 and one_line(err), err
        again = cachewarm("--config", str(config), "run", timeout=90)
        assert again.returncode == 0, again.stderr
    assert_every_hot_listing_current(client, key_prefix)
    for move in moves:
        assert slot_owner(private_cluster, move.slot) is move.target
    nodes = private_cluster.nodes
    assert sum(info_count(n, "errorstats", "errorstat_ASK") for n in nodes) > 0
    assert sum(info_count(n, "errorstats", "errorstat_MOVED") for n in nodes) > 0
    assert sum(info_count(n, "commandstats", "cmdstat_asking") for n in nodes) > 0


def node_says(node: servers.Server, ask: Callable[[redis.Redis], object]) -> object:
    """One node's answer, or None while it is unreachable (killed, or between roles)."""
    client = node_client(node)
    try:
        return ask(client)
    except redis.exceptions.RedisError:
        return None
    finally:
        client.close()


def cluster_ok(node: servers.Server) -> bool:
    return node_says(node, lambda c: c.cluster("INFO").get("cluster_state")) == "ok"


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_a_master_failing_over_to_its_replica_mid_run(
    make_config: MakeConfig, tmp_path: Path, key_prefix: str
) -> None:
    """The run in flight fails with one line; the next one writes to the promoted replica."""
    cluster = servers.start_redis_cluster(tmp_path / "cluster", replicas=1)
    client = cluster_client(cluster.url)
    try:
        config = make_config(  # every node a seed: the first may be the one that dies
            redis_url=cluster.url,
            nodes=cluster.seeds,
            listing_query=slow_listing_query(0.02),
            batch_size=4,
        )
        hot_key = Keys(key_prefix, 1).hot
        slot = (key_slot(hot_key.encode()) + 8192) % 16384
        victim = slot_owner(cluster, slot)
        assert victim is not slot_owner(cluster, key_slot(hot_key.encode()))
        kill_mid_run(config, client, key_prefix, victim)
        survivor = next(n for n in cluster.nodes if n is not victim)
        wait_for(
            "a replica to take over",
            lambda: slot_owner(cluster, slot, via=survivor) is not victim and cluster_ok(survivor),
            timeout=60,
        )
        again = cachewarm("--config", str(config), "run", timeout=90)
        assert again.returncode == 0, again.stderr
        assert_every_hot_listing_current(client, key_prefix)
    finally:
        client.close()
        cluster.stop()


def role(node: servers.Server) -> str:
    return str(node_says(node, lambda c: c.info("replication")["role"]))


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_planned_failovers_back_and_forth_during_warms_fail_no_run(
    make_config: MakeConfig, tmp_path: Path, key_prefix: str
) -> None:
    """CLUSTER FAILOVER on replicas while warms write: the demoted master answers
    READONLY, which the writer follows like MOVED. Every run exits 0; none is stale."""
    cluster = servers.start_redis_cluster(tmp_path / "cluster", replicas=1)
    client = cluster_client(cluster.url)
    stop, failovers, tries = threading.Event(), [], [0]

    def fail_over() -> None:
        while not stop.is_set():
            replicas = [n for n in cluster.nodes if role(n) == "slave"]
            if not replicas:
                stop.wait(0.1)  # a node between roles
                continue
            replica = replicas[tries[0] % len(replicas)]
            tries[0] += 1
            promote = node_client(replica)
            try:
                promote.cluster("FAILOVER")
            except redis.exceptions.RedisError:
                stop.wait(0.2)  # its master is still syncing it: another one next
                continue
            finally:
                promote.close()
            deadline = time.monotonic() + 10
            while role(replica) != "master" and time.monotonic() < deadline:
                time.sleep(0.05)  # the handover: a few cluster-bus round trips
            if role(replica) == "master":  # a manual failover can also time out
                failovers.append(replica.port)
            stop.wait(0.3)

    try:
        config = make_config(
            redis_url=cluster.url,
            nodes=cluster.seeds,
            listing_query=slow_listing_query(0.01),
            batch_size=8,
        )
        mover = threading.Thread(target=fail_over, daemon=True)
        mover.start()
        results: list[tuple[int, str]] = []
        while len(results) < 4 or (len(failovers) < 4 and len(results) < 20):
            result = cachewarm("--config", str(config), "run", "--full", timeout=120)
            results.append((result.returncode, result.stderr))
        stop.set()
        mover.join(timeout=30)
        assert len(failovers) >= 4, (failovers, tries)
        assert results == [(0, "")] * len(results)
        assert_every_hot_listing_current(client, key_prefix)
        audited = cw.audit(load_settings(config, env={}), every=True)
        assert (audited.stale, audited.missing) == (0, 0) and audited.checked > 100
    finally:
        stop.set()
        client.close()
        cluster.stop()
