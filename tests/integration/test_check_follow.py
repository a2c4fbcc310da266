"""`check` knows `[follow]`: the binlog settings and grants follow needs, checked as
follow checks them at start, and no warning that those grants are unneeded."""

from __future__ import annotations

from pathlib import Path

import pytest
import servers

from cachewarm import check
from cachewarm.config import load_settings
from tests.helpers import MakeConfig, mysql_user
from tests.integration.test_follow import make_config, shop

__all__ = ["make_config", "shop"]  # the binlog shop's fixtures, used here too


def check_as(grants: str, make_config: MakeConfig, server: servers.Server) -> check.CheckReport:
    with mysql_user(server.url, grants) as (user, password):
        url = load_settings(make_config(), env={}).mysql.url.replace("root@", f"{user}@")
        return check.check(make_config(mysql_url=url), env={"CACHEWARM_MYSQL_PASSWORD": password})


def finding(report: check.CheckReport, name: str) -> check.Finding:
    (found,) = [f for f in report.findings if f.check == name]
    return found


def test_the_grants_follow_needs_are_checked_and_not_called_unneeded(
    make_config: MakeConfig, binlog_server: servers.Server
) -> None:
    report = check_as(
        "SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.*", make_config, binlog_server
    )
    assert finding(report, "follow").status == check.OK
    grants = finding(report, "grants")
    assert grants.status == check.OK, grants.message
    assert "SELECT and the replication grants" in grants.message
    assert not report.failed


@pytest.mark.parametrize(
    ("grants", "missing"),
    [
        ("SELECT ON *.*", "REPLICATION SLAVE"),
        ("SELECT, REPLICATION SLAVE ON *.*", "REPLICATION CLIENT"),
    ],
)
def test_a_follower_without_its_grants_fails_check(
    make_config: MakeConfig, binlog_server: servers.Server, grants: str, missing: str
) -> None:
    report = check_as(grants, make_config, binlog_server)
    follow = finding(report, "follow")
    assert follow.status == check.FAIL and missing in follow.message
    assert report.failed


def test_without_follow_the_replication_grants_are_excess(
    make_config: MakeConfig, binlog_server: servers.Server
) -> None:
    """The same user, a config without [follow]: check says SELECT is all it needs."""
    report = check_as(
        "SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.*", _no_follow(make_config), binlog_server
    )
    assert not [f for f in report.findings if f.check == "follow"]
    assert finding(report, "grants").status == check.WARN


def _no_follow(make_config: MakeConfig) -> MakeConfig:
    def make(**overrides: object) -> Path:
        path = make_config(**overrides)
        text = path.read_text()
        path.write_text(text[: text.index("[follow]")])
        return path

    return make
