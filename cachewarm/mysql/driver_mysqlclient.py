"""mysqlclient (MySQLdb), with a listing query that can be sent now and read later.

A warm has the server run batch n+1's listing query while it writes batch n (see
Source.listings). MySQLdb's connection can split a query (`send_query`, then
`read_query_result`, both waiting with the GIL released); its cursor cannot, so
Cursor below does what MySQLdb's own execute() does, in two halves.

It uses private parts of MySQLdb's cursor, checked here: `_discard`, `_mogrify`,
`_get_db`, `_do_get_result`, `_post_get_result` and `_executed`. They are the same from
mysqlclient 2.2 on; a version without them gets `CURSOR = None`, and the listing query
is then run when it is asked for: slower, the same bytes.
"""

from __future__ import annotations

from typing import Any

import MySQLdb.connections
import MySQLdb.cursors


class Cursor(MySQLdb.cursors.Cursor):  # type: ignore[misc]
    """A buffered cursor whose execute() is split: send() now, receive() later."""

    def send(self, query: str, args: dict[str, Any]) -> None:
        self._discard()
        sql = bytes(self._mogrify(query, args))  # the C call waits without the GIL
        self._result = self.rowcount = self.lastrowid = None
        self.warning_count = 0
        self._get_db().send_query(sql)
        self._executed = sql  # as execute() records it; fetch*() check it

    def receive(self) -> None:
        db = self._get_db()
        db.read_query_result()
        self._do_get_result(db)
        self._post_get_result()


def _compatible() -> bool:
    names = ("_discard", "_mogrify", "_get_db", "_do_get_result", "_post_get_result")
    return all(hasattr(MySQLdb.cursors.Cursor, name) for name in names) and all(
        hasattr(MySQLdb.connections.Connection, name)
        for name in ("send_query", "read_query_result")
    )


CURSOR: type[Cursor] | None = Cursor if _compatible() else None
