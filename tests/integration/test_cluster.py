"""Redis Cluster: the guarantee tests, run against a real 3-master cluster.

The imported tests are the single-Redis ones, unchanged: the fixtures from `on_cluster`
point them at the cluster. A cluster's faults (nodes stopped, failing over, slots
moving) are in test_cluster_faults.
"""

from __future__ import annotations

import json

import redis
import servers
from pymysql.connections import Connection

import cachewarm as cw
from tests.helpers import (
    MakeSettings,
    product_keys,
)
from tests.integration.on_cluster import (
    key_prefix,
    make_config,
    redis_client,
    redis_mode,
    redis_url,
)
from tests.integration.test_audit import (
    test_an_edit_whose_invalidation_lands_during_the_pause_raises_no_alarm,
    test_audit_finds_exactly_the_stale_ids_and_counts_missing_apart,
    test_audit_without_fix_writes_nothing,
    test_fix_repairs_the_stale_listings_and_a_second_audit_finds_none,
)
from tests.integration.test_cli import test_kill_9_mid_run_then_next_run_succeeds
from tests.integration.test_misses import (
    follow_settings,
    test_a_flood_stays_bounded_and_the_run_within_its_deadline,
    test_dry_run_reports_the_queue_and_consumes_nothing,
    test_follow_fills_reported_misses_as_they_come,
    test_garbage_and_absent_ids_are_counted_not_fatal,
    test_kill_9_mid_drain_loses_no_entry,
    test_misses_a_reader_reports_are_cached_by_the_next_run_with_a_warms_bytes,
    test_misses_an_invalidation_racing_a_fill_leaves_nothing_stale,
    test_run_and_follow_draining_at_once_fill_each_entry_once,
)
from tests.integration.test_reliability import (
    test_hung_query_stops_at_max_seconds_and_names_what_hung,
    test_invalidation_during_a_warm_is_never_overwritten_with_stale_data,
    test_overlapping_redis_lock_runs_second_skips,
    test_paused_redis_lock_holder_cannot_overwrite_the_next_holder,
    test_signal_mid_run_exits_cleanly_and_leaves_the_hot_list_alone,
)
from tests.integration.test_warm import (
    test_empty_hot_query_keeps_the_published_list,
    test_invalidate_rewarm_writes_the_fresh_row,
    test_run_writes_every_hot_listing_then_the_hot_list,
    test_status_reports_runs_and_hot_list,
)

__all__ = [  # collected here again, against the cluster
    "follow_settings",
    "key_prefix",
    "make_config",
    "redis_client",
    "redis_mode",
    "redis_url",
    "test_a_flood_stays_bounded_and_the_run_within_its_deadline",
    "test_an_edit_whose_invalidation_lands_during_the_pause_raises_no_alarm",
    "test_audit_finds_exactly_the_stale_ids_and_counts_missing_apart",
    "test_audit_without_fix_writes_nothing",
    "test_dry_run_reports_the_queue_and_consumes_nothing",
    "test_empty_hot_query_keeps_the_published_list",
    "test_fix_repairs_the_stale_listings_and_a_second_audit_finds_none",
    "test_follow_fills_reported_misses_as_they_come",
    "test_garbage_and_absent_ids_are_counted_not_fatal",
    "test_hung_query_stops_at_max_seconds_and_names_what_hung",
    "test_invalidate_rewarm_writes_the_fresh_row",
    "test_invalidation_during_a_warm_is_never_overwritten_with_stale_data",
    "test_kill_9_mid_drain_loses_no_entry",
    "test_kill_9_mid_run_then_next_run_succeeds",
    "test_misses_a_reader_reports_are_cached_by_the_next_run_with_a_warms_bytes",
    "test_misses_an_invalidation_racing_a_fill_leaves_nothing_stale",
    "test_overlapping_redis_lock_runs_second_skips",
    "test_paused_redis_lock_holder_cannot_overwrite_the_next_holder",
    "test_run_and_follow_draining_at_once_fill_each_entry_once",
    "test_run_writes_every_hot_listing_then_the_hot_list",
    "test_signal_mid_run_exits_cleanly_and_leaves_the_hot_list_alone",
    "test_status_reports_runs_and_hot_list",
]


def test_listings_land_on_every_master(
    make_settings: MakeSettings, redis_cluster: servers.RedisCluster, key_prefix: str
) -> None:
    record = cw.warm(make_settings())
    assert record.status == "ok" and record.written > 100
    per_node = []
    for node in redis_cluster.nodes:
        client = redis.Redis(host=node.host, port=node.port)
        try:
            per_node.append(len(product_keys(client, key_prefix)))
        finally:
            client.close()
    assert sum(per_node) == record.written
    assert all(n > 0 for n in per_node), per_node


def test_seed_nodes_and_show(
    make_settings: MakeSettings, redis_cluster: servers.RedisCluster, shop_conn: Connection
) -> None:
    """A dead first seed is fine when `nodes` names live ones; show reads across slots."""
    s = make_settings(redis_url="redis://127.0.0.1:1/0", nodes=redis_cluster.seeds)
    cw.warm(s)
    hot = json.loads(cw.show(s, 1) or b"{}")
    assert hot.get("id") == 1
