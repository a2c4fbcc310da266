"""Connecting to Redis in each of its modes, and Redis errors as the run's own.

One Redis, a Sentinel-managed master or a Redis Cluster: every other module of the
store takes the client made here and does not care which. A failed Redis call leaves
the store as a SinkError naming the server, never as a redis-py exception: the
operator reads one line, and the callers catch one error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import redis
import redis.exceptions
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.sentinel import Sentinel, SentinelConnectionPool

from ..config import RedisSettings
from ..errors import SinkError
from ..urls import redact_url

Client = redis.Redis | RedisCluster
ERRORS = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException)


@contextlib.contextmanager
def failing_as(where: str) -> Iterator[None]:
    """Redis errors in the block become SinkError("{where} failed: ...")."""
    try:
        yield
    except ERRORS as exc:
        raise SinkError(f"{where} failed: {exc}") from None


def connect(settings: RedisSettings) -> Client:
    """A client for `redis.mode`, with timeouts, checked with a PING.

    cluster: redis-py's RedisCluster (slot map, redirections, topology refresh), seeded
    with `url` and `nodes`; sentinel: the master that `sentinels` name for `service_name`.
    """
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.timeout,
        "client_name": "cachewarm",
    }
    if settings.password is not None:
        kwargs["password"] = settings.password.reveal()
    if settings.ssl_ca_certs:
        kwargs["ssl_ca_certs"] = settings.ssl_ca_certs
    where = describe(settings)
    client: Client | None = None
    try:
        if settings.mode == "cluster":
            seeds = [ClusterNode(*_host_port(n)) for n in settings.nodes]  # type: ignore[no-untyped-call]
            client = RedisCluster.from_url(settings.url, startup_nodes=seeds, **kwargs)
        elif settings.mode == "sentinel":
            client = _sentinel_master(settings, kwargs)
        else:
            client = redis.Redis.from_url(settings.url, **kwargs)
        client.ping()
    except ERRORS as exc:
        if client is not None:
            client.close()
        hint = ""
        if settings.password is None and isinstance(exc, redis.exceptions.AuthenticationError):
            hint = (
                " (it wants a password and none is set: CACHEWARM_REDIS_PASSWORD or "
                "[redis] password)"
            )
        raise SinkError(f"cannot connect to {where}: {exc}{hint}") from None
    return client


def _host_port(node: str) -> tuple[str, int]:
    host, _, port = node.rpartition(":")
    return host.strip("[]"), int(port)


class _SentinelMaster(redis.Redis):
    """The master's client; closing it also closes the connections to the sentinels.

    redis-py leaves those to the Sentinel object, which nothing else here holds: every
    `connect` would otherwise leave one socket per sentinel asked open until collected.
    """

    def close(self) -> None:
        super().close()
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            for asked in pool.sentinel_manager.sentinels:
                asked.close()


def _sentinel_master(settings: RedisSettings, kwargs: dict[str, Any]) -> redis.Redis:
    """The service's master; `url` gives its db, user and TLS (its host is not used)."""
    parsed = parse_url(settings.url)  # type: ignore[no-untyped-call]
    master_kwargs = dict(kwargs)
    for name in ("db", "username"):
        if parsed.get(name) is not None:
            master_kwargs[name] = parsed[name]
    if settings.url.startswith("rediss://"):
        master_kwargs["ssl"] = True
    timeouts = {k: kwargs[k] for k in ("socket_connect_timeout", "socket_timeout")}
    asking = dict(timeouts)  # the sentinels' own connections: no password unless set
    if settings.sentinel_password is not None:
        asking["password"] = settings.sentinel_password.reveal()
    # redis-py types Sentinel from 8.x on; older releases leave it untyped.
    sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
        [_host_port(s) for s in settings.sentinels], sentinel_kwargs=asking, **timeouts
    )
    master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call,unused-ignore]
        settings.service_name, redis_class=_SentinelMaster, **master_kwargs
    )
    return master


def master_address(client: Client, *, where: str) -> tuple[str, int] | None:
    """Where the sentinels say the master is now (None without Sentinel)."""
    pool = getattr(client, "connection_pool", None)
    if not isinstance(pool, SentinelConnectionPool):
        return None
    with failing_as(where):
        host, port = pool.get_master_address()  # type: ignore[no-untyped-call]
    return str(host), int(port)


def check_master(client: Client, since: tuple[str, int] | None, where: str) -> None:
    """Refuse to publish if a failover moved the master while this run wrote.

    Until Sentinel demotes it, the old master still takes writes, which the new one
    never sees: a hot list published there would be lost with them.
    """
    now = master_address(client, where=where)
    if now != since and since is not None and now is not None:
        raise SinkError(
            f"{where}: the master moved from {since[0]}:{since[1]} to {now[0]}:{now[1]} "
            "during the run (failover); hot list not published"
        )


def describe(settings: RedisSettings) -> str:
    """How errors name the Redis: never with a password."""
    if settings.mode == "cluster":
        return f"Redis Cluster at {redact_url(settings.url)}"
    if settings.mode == "sentinel":
        return f"Redis master {settings.service_name!r} of sentinels {','.join(settings.sentinels)}"
    return f"Redis at {redact_url(settings.url)}"
