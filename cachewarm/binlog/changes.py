"""Which product ids a row event names: the mapped columns of both row images.

Row events of the `[follow]` tables become product ids (both row images of an UPDATE
count) or, for tables mapped by a query, the primary keys that query turns into ids.
Rows of a table that cascades into a watched one through a foreign key (see
server.cascading_parents) mark the batch "everything": the rows the server changed
through the key are not in the binlog. They are gathered in a Batch until the
follower applies it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymysqlreplication.row_event import UpdateRowsEvent

from ..errors import BinlogUnfit
from . import rows
from .server import Position


@dataclass
class Batch:
    """Changes read but not yet applied; `safe` is the last transaction boundary read."""

    safe: Position
    ids: set[int] = field(default_factory=set)
    keyed: dict[str, set[int]] = field(default_factory=dict)  # query table -> primary keys
    started: float = 0.0
    everything: str = ""  # why every listing must go (a DDL, a cascading parent); "" = not

    def __bool__(self) -> bool:
        return bool(self.ids or self.keyed or self.everything)

    def add(self, other: Batch) -> None:
        """Take in the changes of another batch (an XA transaction's, at its commit)."""
        self.ids |= other.ids
        for table, keys in other.keyed.items():
            self.keyed.setdefault(table, set()).update(keys)
        self.everything = self.everything or other.everything


class Rows:
    """What `collect` reads of each watched table: the product-id column, the query key."""

    def __init__(
        self, columns: dict[str, str], primary: dict[str, str], parents: dict[str, str]
    ) -> None:
        self.columns, self.primary = columns, primary
        self.parents = parents  # cascading parent -> the foreign key that makes it one
        self.slots: dict[str, tuple[int, int]] = {}  # table -> (id slot, key slot), -1: none
        wanted: dict[str, tuple[str, ...]] = {}
        for table in {*columns, *primary}:
            names = tuple(dict.fromkeys(n for n in (columns.get(table), primary.get(table)) if n))
            wanted[table] = names
            self.slots[table] = (
                names.index(columns[table]) if table in columns else -1,
                names.index(primary[table]) if table in primary else -1,
            )
        self.reader = rows.RowReader(wanted, self._missing)

    def _missing(self, event: Any, column: str) -> BinlogUnfit:
        setting = "tables" if self.columns.get(event.table) == column else "queries"
        return _no_column(event, column, setting)


def collect(event: Any, wanted: Rows, batch: Batch) -> int:
    """Add the product ids (or query keys) of one row event's rows; returns how many rows.

    A row without the mapped column (renamed or dropped by an ALTER TABLE) stops the
    follower before its checkpoint: skipping those rows would miss their edits.
    """
    table = event.table
    if table in wanted.parents:
        batch.everything = f"{event.schema}.{table} (foreign key {wanted.parents[table]})"
        if table not in wanted.slots:
            return 0
    images = wanted.reader.images(event)
    product, key = wanted.slots[table]
    if product >= 0:
        ids = batch.ids
        for values in images:
            value = values[product]
            if value is not None and value >= 0:
                ids.add(value)
    if key >= 0:
        keys = {v for v in (values[key] for values in images) if v is not None}
        if keys:
            batch.keyed.setdefault(table, set()).update(keys)
    return len(images) // 2 if isinstance(event, UpdateRowsEvent) else len(images)


def _no_column(event: Any, column: str, setting: str) -> BinlogUnfit:
    return BinlogUnfit(
        f"[follow] {setting}: rows of {event.schema}.{event.table} have no column {column!r} "
        "(altered?); fix the mapping and restart: the follower resumes before these rows"
    )
