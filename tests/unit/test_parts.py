"""--version, -v and check name the MySQL driver, JSON encoder and Redis parser in use."""

from __future__ import annotations

import pytest

from cachewarm import __version__, parts
from tests.helpers import cachewarm, require_mysqlclient


def test_version_names_the_c_parts_of_the_fast_install() -> None:
    require_mysqlclient()
    result = cachewarm("--version")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [f"cachewarm {__version__}", parts.describe()]
    assert parts.describe().startswith("MySQL driver mysqlclient ")
    assert "JSON encoder orjson " in result.stdout and "Redis parser hiredis " in result.stdout


def test_the_pure_python_parts_are_named_where_the_c_ones_are_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def installed(module: str, dist: str) -> str | None:
        return "1.2" if module == "pymysql" else None

    monkeypatch.setattr(parts, "_installed", installed)
    assert parts.describe() == (
        "MySQL driver pymysql 1.2, JSON encoder json (standard library), "
        "Redis parser redis-py (pure Python)"
    )
    assert parts.describe("mysqlclient").startswith("MySQL driver mysqlclient (not installed)")


def test_verbose_says_which_parts_a_command_runs_with() -> None:
    result = cachewarm("-v", "status", env={"CACHEWARM_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert f"cachewarm: debug: cachewarm.parts parts={parts.describe()}" in result.stderr


@pytest.mark.parametrize(
    ("module", "dist"),
    [("pymysql", "PyMySQL"), ("orjson", "orjson"), ("hiredis", "hiredis"), ("click", "click")],
)
def test_a_version_read_from_the_dist_info_name_is_the_installed_one(
    module: str, dist: str
) -> None:
    from importlib import metadata

    assert parts._installed(module, dist) == metadata.version(dist)
