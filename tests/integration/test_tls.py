"""TLS to both servers: MySQL with [mysql] ssl_ca, Redis with rediss:// and ssl_ca_certs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import seed
import servers

import cachewarm
from cachewarm import Settings, load_settings
from cachewarm.errors import SinkError, SourceError
from tests.helpers import MakeConfig


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that did not sign the server's certificate


# What an operator's CA and server certificate carry; Python 3.13 verifies strictly
# (VERIFY_X509_STRICT) and refuses a CA without keyUsage or a leaf without its AKI.
OPENSSL_CNF = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth  # a cluster node is its peers' client
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = IP:127.0.0.1, DNS:localhost
"""

# The verification failure itself, as the ssl module (PyMySQL, redis-py) and libmariadb
# (mysqlclient) word it: the server's chain ends in a CA the client was not told to trust.
NOT_VERIFIED = (
    r"(certificate verify failed|TLS/SSL error): self[- ]signed certificate in certificate chain"
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A throwaway CA, a server certificate it signed for 127.0.0.1, and an unrelated CA."""
    d = tmp_path_factory.mktemp("tls")
    (d / "openssl.cnf").write_text(OPENSSL_CNF)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    for name, subject in (("ca", "/CN=cachewarm test CA"), ("other", "/CN=someone else")):
        openssl("req", "-x509", "-config", "openssl.cnf", "-extensions", "ca", "-newkey",
                "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
                "-days", "2", "-subj", subject)  # fmt: skip
    openssl("req", "-config", "openssl.cnf", "-newkey", "rsa:2048", "-nodes", "-keyout",
            "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")  # fmt: skip
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "openssl.cnf",
            "-extensions", "server")  # fmt: skip
    (d / "server.key").chmod(0o644)  # mariadbd reads it as whoever it runs as
    return Certs(d / "ca.pem", d / "server.pem", d / "server.key", d / "other.pem")


@pytest.fixture
def tls_redis(tmp_path: Path, certs: Certs) -> Iterator[str]:
    """A Redis whose TLS port is the only one cachewarm is given; yields its rediss:// URL."""
    port = servers.free_port()
    server = servers.start_redis(
        tmp_path / "redis",
        extra_args=[
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(certs.cert),
            "--tls-key-file",
            str(certs.key),
            "--tls-ca-cert-file",
            str(certs.ca),
            "--tls-auth-clients",
            "no",
        ],
    )
    try:
        yield f"rediss://127.0.0.1:{port}/0"
    finally:
        server.stop()


@pytest.fixture
def tls_mariadb(tmp_path: Path, certs: Certs) -> Iterator[str]:
    """A MariaDB with the sample shop and a user that may only connect over TLS."""
    server = servers.start_mariadb(
        tmp_path / "mariadb",
        extra_args=[f"--ssl-ca={certs.ca}", f"--ssl-cert={certs.cert}", f"--ssl-key={certs.key}"],
    )
    try:
        seed.seed(f"{server.url}/shop", 50)
        admin = seed.connect(server.url, server_only=True, local_infile=False)
        with admin.cursor() as cur:
            cur.execute("CREATE USER 'tlsonly'@'%' IDENTIFIED BY 'tls-pw-123' REQUIRE SSL")
            cur.execute("GRANT SELECT ON shop.* TO 'tlsonly'@'%'")
        admin.close()
        yield f"mysql://tlsonly@127.0.0.1:{server.port}/shop"
    finally:
        server.stop()


def tls_settings(make_config: MakeConfig, mysql: str, **overrides: object) -> Settings:
    return load_settings(
        make_config(mysql_url=mysql, **overrides), env={"CACHEWARM_MYSQL_PASSWORD": "tls-pw-123"}
    )


@pytest.mark.parametrize("driver", ["pymysql", "mysqlclient"])
def test_mysql_over_tls(
    make_config: MakeConfig, tls_mariadb: str, certs: Certs, redis_client: redis.Redis, driver: str
) -> None:
    s = tls_settings(make_config, tls_mariadb, ssl_ca=str(certs.ca), driver=driver)
    record = cachewarm.warm(s)
    assert record.written == record.hot > 0
    untrusted = tls_settings(make_config, tls_mariadb, ssl_ca=str(certs.other_ca), driver=driver)
    with pytest.raises(SourceError, match=f"cannot connect to MySQL at .*{NOT_VERIFIED}"):
        cachewarm.warm(untrusted)


def test_redis_over_tls(make_config: MakeConfig, tls_redis: str, certs: Certs) -> None:
    s = load_settings(make_config(redis_url=tls_redis, ssl_ca_certs=str(certs.ca)), env={})
    record = cachewarm.warm(s)
    assert record.hot_published
    shown = cachewarm.show(s, record.hot_ids[0])
    assert json.loads(shown or b"")["id"] == record.hot_ids[0]
    untrusted = load_settings(make_config(redis_url=tls_redis), env={})
    with pytest.raises(SinkError, match=f"cannot connect to Redis at rediss://.*{NOT_VERIFIED}"):
        cachewarm.warm(untrusted)


@pytest.fixture
def tls_cluster(tmp_path: Path, certs: Certs) -> Iterator[servers.RedisCluster]:
    """A 3-master cluster whose nodes also listen on TLS, with the cluster bus over TLS."""
    tls = servers.TLSFiles(cert=certs.cert, key=certs.key, ca=certs.ca)
    cluster = servers.start_redis_cluster(tmp_path / "cluster", tls=tls)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_redis_cluster_over_tls(
    make_config: MakeConfig, tls_cluster: servers.RedisCluster, certs: Certs, key_prefix: str
) -> None:
    """rediss:// to one node: the slot map gives TLS ports, and every master gets listings."""
    s = load_settings(
        make_config(redis_url=tls_cluster.tls_url, mode="cluster", ssl_ca_certs=str(certs.ca)),
        env={},
    )
    record = cachewarm.warm(s)
    assert record.hot_published and record.written == record.hot > 100
    per_node = []
    for node in tls_cluster.nodes:  # read back over each node's plain port
        client = redis.Redis(host=node.host, port=node.port)
        try:
            per_node.append(len(list(client.scan_iter(match=f"{key_prefix}:v1:product:*"))))
        finally:
            client.close()
    assert all(n > 0 for n in per_node) and sum(per_node) == record.written, per_node
    untrusted = load_settings(make_config(redis_url=tls_cluster.tls_url, mode="cluster"), env={})
    with pytest.raises(
        SinkError, match=f"cannot connect to Redis Cluster at rediss://.*{NOT_VERIFIED}"
    ):
        cachewarm.warm(untrusted)
