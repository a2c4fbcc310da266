"""What a statement in the binlog (a QueryEvent) does to the watched tables.

Under ROW format the binlog still carries some changes as statements: TRUNCATE, DROP,
RENAME, ALTER and CREATE OR REPLACE change every row of a table without a row event,
and DML written as a statement (binlog_format STATEMENT or MIXED, globally or in one
session) has no rows to read. `classify` reads just enough of a statement to say which
of these it is and whether it names a watched table: comments dropped (the contents of
executable `/*! ... */` comments kept), backquoted and schema-qualified names resolved
against the statement's default schema, names compared without regard to case. When
unsure it says "touches": an extra invalidation of everything is harmless, a missed
one leaves listings stale.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

TOKEN = re.compile(
    r"""
    (?P<skip>/\*(?!!|M!).*?\*/|/\*M?!\d*|\*/|(?:--(?=\s|$)|\#)[^\n]*)
    |(?P<string>'(?:[^'\\]|\\.|'')*')
    |(?P<quoted>`(?:[^`]|``)*`|"(?:[^"\\]|\\.|"")*")
    |(?P<word>[A-Za-z0-9_$\x80-\U0010ffff]+)
    |(?P<dot>\.)
    |(?P<other>\S)
    """,
    re.VERBOSE | re.DOTALL,
)
DDL = frozenset({"ALTER", "CREATE", "DROP", "RENAME", "TRUNCATE"})
DML = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD", "WITH"})


@dataclass(frozen=True)
class Statement:
    """`kind`: "ddl" or "dml" when the statement names a watched table, else "other"."""

    kind: str
    verb: str = ""
    table: str = ""  # the first watched table it names, schema-qualified


OTHER = Statement("other")


def names(sql: str) -> tuple[list[str], list[tuple[str | None, str]]]:
    """(the statement's leading words in upper case, every (schema, name) it mentions)."""
    words: list[str] = []
    found: list[tuple[str | None, str]] = []
    previous: str | None = None  # a name just read, waiting to see if a dot follows
    qualifier: str | None = None  # the name before a dot
    for match in TOKEN.finditer(sql):
        kind, text = match.lastgroup, match.group()
        if kind in ("skip", "string"):
            continue
        if kind in ("word", "quoted"):
            name = text[1:-1].replace(text[0] * 2, text[0]) if kind == "quoted" else text
            if kind == "word" and len(words) < 4:
                words.append(text.upper())
            if qualifier is not None:
                found.append((qualifier, name))
                qualifier = previous = None
            else:
                if previous is not None:
                    found.append((None, previous))
                previous = name
            continue
        if kind == "dot" and previous is not None:
            qualifier, previous = previous, None
            continue
        if previous is not None:
            found.append((None, previous))
        previous = qualifier = None
    if previous is not None:
        found.append((None, previous))
    return words, found


def classify(sql: str, default_schema: str, schema: str, tables: Iterable[str]) -> Statement:
    """Whether `sql`, run with `default_schema` current, changes a table of `schema` named
    in `tables` as DDL ("ddl") or as DML written as a statement ("dml")."""
    words, found = names(sql)
    verb = words[0] if words else ""
    if verb not in DDL and verb not in DML:
        return OTHER
    watched = {t.lower() for t in tables}
    if verb == "DROP" and len(words) > 1 and words[1] in ("DATABASE", "SCHEMA"):
        if any(q is None and n.lower() == schema.lower() for q, n in found):
            return Statement("ddl", "DROP DATABASE", schema)
        return OTHER
    for qualifier, name in found:
        in_schema = (qualifier or default_schema).lower() == schema.lower()
        if in_schema and name.lower() in watched:
            return Statement("ddl" if verb in DDL else "dml", verb, f"{schema}.{name}")
    return OTHER
