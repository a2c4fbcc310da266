"""Which interchangeable parts are active: the MySQL driver, JSON encoder, Redis parser.

The `fast` extra (and the wheels pip picks) swaps each for a C one that writes the
same bytes, faster. Which ones run matters for a timing or a bug report, so
`--version`, `-v` and `check` say. They are looked up, not imported, so that
`--version` stays quick: a version comes from the name of the `<dist>-<version>.dist-info`
directory next to the module (the wheel layout), and importlib.metadata, which costs
more than the rest of `--version` together, is loaded only when there is none.
"""

from __future__ import annotations

import os
from importlib import util


def _installed(module: str, dist: str) -> str | None:
    """The version of `dist` if `module` can be imported, else None."""
    spec = util.find_spec(module)
    if spec is None:
        return None
    if spec.origin and spec.has_location:
        here = os.path.dirname(spec.origin)
        site = os.path.dirname(here) if spec.submodule_search_locations else here
        if version := _dist_info_version(site, dist):
            return version
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "(version unknown)"


def _dist_info_version(site: str, dist: str) -> str | None:
    """The version in `site`'s `<dist>-<version>.dist-info` (name compared normalized)."""
    want = dist.lower().replace("-", "_").replace(".", "_") + "-"
    try:
        names = os.listdir(site)
    except OSError:
        return None
    for name in names:
        if name.endswith(".dist-info") and name.lower().replace(".", "_").startswith(want):
            return name[len(want) : -len(".dist-info")]
    return None


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
