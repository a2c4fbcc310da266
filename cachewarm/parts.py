"""Which interchangeable parts are active: the MySQL driver, JSON encoder, Redis parser.

The `fast` extra (and the wheels pip picks) swaps each for a C one that writes the
same bytes, faster. Which ones run matters for a timing or a bug report, so
`--version`, `-v` and `check` say. They are looked up, not imported, so that
`--version` stays quick.
"""

from __future__ import annotations

from importlib import metadata, util


def _installed(module: str, dist: str) -> str | None:
    """The version of `dist` if `module` can be imported, else None."""
    if util.find_spec(module) is None:
        return None
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "(version unknown)"


def describe(driver: str = "auto") -> str:
    """One line, e.g. 'MySQL driver mysqlclient 2.3.2, JSON encoder orjson 3.13.0, ...'.

    `driver` is `[mysql] driver`: auto picks mysqlclient when it is installed, as a run
    does (mysql.source.driver_name).
    """
    mysqlclient = _installed("MySQLdb", "mysqlclient")
    if driver == "auto":
        driver = "mysqlclient" if mysqlclient else "pymysql"
    version = mysqlclient if driver == "mysqlclient" else _installed("pymysql", "PyMySQL")
    orjson, hiredis = _installed("orjson", "orjson"), _installed("hiredis", "hiredis")
    return (
        f"MySQL driver {driver} {version or '(not installed)'}, "
        f"JSON encoder {f'orjson {orjson}' if orjson else 'json (standard library)'}, "
        f"Redis parser {f'hiredis {hiredis}' if hiredis else 'redis-py (pure Python)'}"
    )
