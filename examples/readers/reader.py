"""Read one cached listing, or the hot list, as a shop's Python code would (redis-py).

    python3 reader.py redis://127.0.0.1:6379/0 cachewarm 1 42      # one Redis
    python3 reader.py 10.0.0.1:7000,10.0.0.2:7000 cachewarm 1 hot  # a cluster's nodes

Arguments: the Redis URL (or a cluster's host:port list), the key prefix and version,
and a product id or `hot`. Prints the value exactly as stored; on a miss prints nothing
and exits 1: read MySQL instead, and never write the listing yourself (so too when
Redis fails, which exits 2). A missed product is reported to cachewarm, which warms it
(fire-and-forget: a failed report changes nothing). A password is taken from
REDIS_PASSWORD, never from the arguments, and never printed.
"""

import contextlib
import os
import sys

import redis
from redis.cluster import ClusterNode, RedisCluster


def connect(address: str) -> redis.Redis | RedisCluster:
    password = os.environ.get("REDIS_PASSWORD") or None
    if address.startswith(("redis://", "rediss://")):
        return redis.Redis.from_url(address, password=password)
    nodes = []
    for node in address.split(","):
        host, port = node.rsplit(":", 1)
        nodes.append(ClusterNode(host, int(port)))
    return RedisCluster(startup_nodes=nodes, password=password)


def report_miss(client: redis.Redis | RedisCluster, prefix: str, version: str, what: str) -> None:
    """Tell cachewarm a listing was missing; MAXLEN as its [warm] miss_queue_max."""
    # Fire-and-forget: a lost report only delays the warm.
    with contextlib.suppress(redis.RedisError, redis.exceptions.RedisClusterException):
        client.xadd(f"{prefix}:v{version}:misses", {"id": what}, maxlen=10000, approximate=True)


def main() -> int:
    address, prefix, version, what = sys.argv[1:]
    key = f"{prefix}:v{version}:" + ("hot" if what == "hot" else f"product:{what}")
    try:
        client = connect(address)
        try:
            value = client.get(key)
            if value is None and what != "hot":
                report_miss(client, prefix, version, what)
        finally:
            client.close()
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        print(f"Redis failed: {exc}", file=sys.stderr)
        return 2
    if value is None:
        print(f"{key} is not cached: read it from MySQL", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
