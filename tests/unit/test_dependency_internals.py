"""The private parts of other libraries that cachewarm relies on are still there.

pyproject.toml caps each of these libraries below its next release; this is what trips
when a new release (in `scripts/test --latest`, or a raised cap) moves one of them. The
real-server tests then prove the behaviour; these say which part moved, by name.
"""

from __future__ import annotations

import inspect

import pymysql
import pytest
from pymysqlreplication.event import BinLogEvent
from pymysqlreplication.packet import BinLogPacketWrapper
from redis.cluster import NodesManager, RedisCluster
from redis.connection import Connection
from redis.sentinel import SentinelConnectionPool

from cachewarm.mysql import driver_pymysql as pymysql_rows
from tests.helpers import require_mysqlclient


def test_pymysql_rows_uses_its_fast_reader_on_the_supported_pymysql() -> None:
    assert tuple(pymysql.VERSION[:2]) in pymysql_rows.VERSIONS
    assert pymysql_rows.FAST, "PyMySQL internals moved: pymysql_rows fell back to stock"


def test_mysqlclient_can_send_a_query_ahead() -> None:
    require_mysqlclient()
    from cachewarm.mysql import driver_mysqlclient as mysqlclient_ahead

    assert mysqlclient_ahead.CURSOR is not None, "mysqlclient internals moved"


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (Connection, "send_packed_command"),
        (SentinelConnectionPool, "get_master_address"),
        (NodesManager, "get_node_from_slot"),
        (NodesManager, "get_node"),
        (NodesManager, "initialize"),
    ],
)
def test_redis_py_still_has_the_method_the_store_calls(owner: type, name: str) -> None:
    assert callable(getattr(owner, name, None)), f"redis-py: {owner.__name__}.{name} is gone"


def test_redis_cluster_still_keeps_its_slot_map_in_nodes_manager() -> None:
    assert "self.nodes_manager = NodesManager(" in inspect.getsource(RedisCluster.__init__)


def test_binlog_events_still_expose_the_packet_reads_rows_walks() -> None:
    assert callable(getattr(BinLogPacketWrapper, "read", None))
    assert "self.read_bytes" in inspect.getsource(BinLogPacketWrapper)
    assert "self.event_size = event_size" in inspect.getsource(BinLogEvent.__init__)
    assert "self.packet = from_packet" in inspect.getsource(BinLogEvent.__init__)
