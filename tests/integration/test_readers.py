"""The reader contract, proven in each reader's own language: the snippets of
docs/readers.md (examples/readers/) read what a warm wrote, byte for byte, from one
Redis and from a cluster, and never print a password.

Node and PHP come from scripts/bootstrap; where they are missing the tests skip,
except under CI, where a missing one fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import servers
from redis.cluster import RedisCluster

import cachewarm as cw
from cachewarm import Settings, load_settings
from cachewarm.keys import Keys
from tests.helpers import MakeConfig, one_line
from tests.integration.topologies import cluster_client, delete_prefix_everywhere, node_client

READERS = Path(__file__).resolve().parents[2] / "examples" / "readers"
LANGUAGES = ["python", "node", "php"]
PASSWORD = "Rdr-Pw-5e2c91"
WRONG_PASSWORD = "Rdr-Wrong-0b7d44"


def missing(what: str) -> None:
    """Skip for want of a runtime, or under CI, where scripts/bootstrap installs it, fail."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (scripts/bootstrap installs it)")
    pytest.skip(f"{what}; run scripts/bootstrap")


def reader(language: str) -> list[str]:
    """The command that runs the snippet in `language`."""
    if language == "python":
        return [sys.executable, str(READERS / "reader.py")]
    if language == "node":
        node = shutil.which("node") or shutil.which("nodejs")
        if node is None:
            missing("the Node reader needs node (Debian: nodejs)")
        if not (READERS / "node_modules" / "ioredis").is_dir():
            missing("the Node reader needs ioredis (npm ci in examples/readers)")
        return [str(node), str(READERS / "reader.js")]
    php = shutil.which("php")
    if php is None:
        missing("the PHP reader needs php (Debian: php-cli)")
    has_redis = [str(php), "-r", 'exit(extension_loaded("redis") ? 0 : 1);']
    if subprocess.run(has_redis, check=False, capture_output=True).returncode != 0:
        missing("the PHP reader needs phpredis (Debian: php-redis)")
    # A stack trace would show call arguments: prove the snippet prints none, whatever php.ini says.
    return [str(php), "-d", "zend.exception_ignore_args=0", str(READERS / "reader.php")]


def read(
    command: list[str], address: str, keys: Keys, what: str, password: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_PASSWORD"}
    if password is not None:
        env["REDIS_PASSWORD"] = password
    return subprocess.run(
        [*command, address, keys.prefix, str(keys.version), what],
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )


def show(config: Path, product_id: int) -> bytes:
    """`cachewarm show`'s output, as bytes."""
    result = subprocess.run(
        [sys.executable, "-m", "cachewarm", "--config", str(config), "show", str(product_id)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(params=LANGUAGES)
def command(request: pytest.FixtureRequest) -> list[str]:
    """The snippet of each language, found (or skipped) before any server is set up."""
    return reader(request.param)


@dataclass
class Warmed:
    config: Path
    settings: Settings
    address: str  # what a reader is given: a URL, or a cluster's host:port list
    client: redis.Redis | RedisCluster


@pytest.fixture(params=["redis", "cluster"])
def warmed(
    request: pytest.FixtureRequest, make_config: MakeConfig, redis_url: str, key_prefix: str
) -> Iterator[Warmed]:
    """The sample shop warmed into one Redis, or into the shared cluster."""
    if request.param == "cluster":
        cluster: servers.RedisCluster = request.getfixturevalue("redis_cluster")
        config = make_config(mode="cluster", redis_url=cluster.url)
        client: redis.Redis | RedisCluster = cluster_client(cluster.url)
        address = ",".join(cluster.seeds)
    else:
        config = make_config()
        client = redis.Redis.from_url(redis_url)
        address = redis_url
    settings = load_settings(config, env={})
    try:
        assert cw.warm(settings).status == "ok"
        yield Warmed(config, settings, address, client)
    finally:
        if isinstance(client, RedisCluster):
            delete_prefix_everywhere(client, key_prefix)
        client.close()


@pytest.mark.slow
def test_a_reader_gets_the_listing_and_hot_list_as_stored(
    command: list[str], warmed: Warmed
) -> None:
    keys = warmed.settings.keys
    hot_list = warmed.client.get(keys.hot)
    assert isinstance(hot_list, bytes)
    hot = json.loads(hot_list)
    listings: dict[int, bytes] = {}
    for i in hot:
        value = warmed.client.get(keys.product(i))
        assert isinstance(value, bytes)
        listings[i] = value
    # The listing with the most bytes outside ASCII: nothing may re-encode it on the way.
    product_id = max(hot, key=lambda i: sum(b > 127 for b in listings[i]))
    listing = listings[product_id]
    assert not listing.isascii()

    got = read(command, warmed.address, keys, str(product_id))
    assert (got.returncode, got.stderr) == (0, b"")
    assert got.stdout == listing
    assert show(warmed.config, product_id) == listing + b"\n"  # show adds the newline

    got = read(command, warmed.address, keys, "hot")
    assert (got.returncode, got.stderr, got.stdout) == (0, b"", hot_list)


def test_a_miss_prints_nothing_and_exits_1(command: list[str], warmed: Warmed) -> None:
    keys = warmed.settings.keys
    got = read(command, warmed.address, keys, "999999")
    assert (got.returncode, got.stdout) == (1, b"")
    assert got.stderr == f"{keys.product(999999)} is not cached: read it from MySQL\n".encode()


@pytest.mark.slow
def test_a_miss_is_reported_to_the_stream_and_never_written(
    command: list[str], warmed: Warmed
) -> None:
    keys = warmed.settings.keys
    client = warmed.client
    client.delete(keys.hot)  # a missing hot list is no product: nothing to report
    assert read(command, warmed.address, keys, "hot").returncode == 1
    assert client.exists(keys.misses) == 0
    for _ in range(2):
        assert read(command, warmed.address, keys, "999999").returncode == 1
    entries: Any = client.xrange(keys.misses)
    assert [fields for _, fields in entries] == [{b"id": b"999999"}] * 2
    assert client.exists(keys.product(999999)) == 0


@pytest.fixture(params=["redis", "cluster"])
def guarded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Keys, bytes]]:
    """(address, keys, listing): a listing on a Redis, or a cluster, that requires PASSWORD."""
    keys = Keys("cwtest-readers")
    listing = '{"id":7,"name":"Café ☕ \\"quoted\\""}'.encode()
    if request.param == "cluster":
        cluster = servers.start_redis_cluster(tmp_path / "cluster")
        nodes, address = cluster.nodes, ",".join(cluster.seeds)
        client: redis.Redis | RedisCluster = cluster_client(cluster.url)
    else:
        server = servers.start_redis(tmp_path / "redis")
        nodes, address = [server], server.url
        client = redis.Redis.from_url(server.url)
    try:
        client.set(keys.product(7), listing)
        client.close()
        for node in nodes:
            admin = node_client(node)
            admin.config_set("requirepass", PASSWORD)
            admin.close()
        yield address, keys, listing
    finally:
        for node in nodes:
            node.stop()


@pytest.mark.slow
def test_a_reader_takes_the_password_from_the_environment_and_never_prints_it(
    command: list[str], guarded: tuple[str, Keys, bytes]
) -> None:
    address, keys, listing = guarded
    got = read(command, address, keys, "7", PASSWORD)
    assert (got.returncode, got.stdout, got.stderr) == (0, listing, b"")
    for password in (WRONG_PASSWORD, None):
        got = read(command, address, keys, "7", password)
        assert (got.returncode, got.stdout) == (2, b""), got.stderr
        line = one_line(got.stderr.decode())
        assert line.startswith("Redis failed: ")
        assert PASSWORD not in line and WRONG_PASSWORD not in line
