"""MySQL values to listing JSON: the whole type mapping, in one place.

The driver is told to hand over DECIMAL, DATE and TIME as the server's own text and
DATETIME already in ISO 8601, so the hot path never builds Decimal or datetime objects
only to turn them back into strings. What is left for Python is one dict and one
C-accelerated `json` call per row; bytes (binary columns) reach `default` and become
base64.

| MySQL                  | JSON                                                  |
|------------------------|-------------------------------------------------------|
| integer types          | number                                                |
| DECIMAL                | string with the exact digits, "19.90"                 |
| FLOAT, DOUBLE          | number                                                |
| DATE                   | "YYYY-MM-DD"                                          |
| DATETIME, TIMESTAMP    | "YYYY-MM-DDTHH:MM:SS", ".ffffff" kept when non-zero   |
| TIME                   | "HH:MM:SS" as the server prints it                    |
| NULL                   | null                                                  |
| text types             | string, full utf8mb4                                  |
| binary types, BIT      | base64 string                                         |
| [warm] json_columns    | that JSON text itself: array, object, ...             |

A json_columns value is embedded as the server wrote it, less the whitespace between
tokens: its numbers keep their exact digits (a DECIMAL inside JSON_OBJECT stays 19.90,
where a round trip through Python floats would give 19.9 or lose digits), and the bytes
cannot depend on the driver or the JSON library. It must be valid JSON (NaN and
Infinity are not); otherwise the row is an InvalidJSON for the caller to skip, because
embedding it as a string would hand readers a different type than they were promised.
"""

from __future__ import annotations

import base64
import json
import json.encoder
import re
from collections.abc import Callable, Sequence
from typing import Any

from pymysql import converters
from pymysql.constants import FIELD_TYPE


def iso_datetime(raw: str) -> str:
    """'2026-11-24 10:15:00.500' -> '2026-11-24T10:15:00.500000'; a zero fraction is dropped.

    Six fraction digits whatever the column's precision, as Python's isoformat() does.
    """
    date, _, rest = raw.partition(" ")
    clock, _, fraction = rest.partition(".")
    if fraction.strip("0"):
        return f"{date}T{clock}.{fraction.ljust(6, '0')}"
    return f"{date}T{clock}"


FLOAT_TYPES = (FIELD_TYPE.FLOAT, FIELD_TYPE.DOUBLE)
AS_SERVER_TEXT = (FIELD_TYPE.DECIMAL, FIELD_TYPE.NEWDECIMAL, FIELD_TYPE.DATE, FIELD_TYPE.TIME)
Dumps = Callable[[object], bytes]


class IdList(tuple[int, ...]):
    """Validated product ids for `IN %(ids)s`: rendered in one go, not escaped one by one."""

    __slots__ = ()


def _id_list(ids: IdList, _mapping: object = None) -> str:
    return "(" + ",".join(map(str, ids)) + ")" if ids else "(NULL)"


def conversions(driver: str) -> dict[Any, Any]:
    """The driver's conversion table with the decoders above and the IdList encoder.

    PyMySQL hands converters str; mysqlclient hands numeric columns bytes (int() and
    float() take both) and the rest str, so one table shape serves both.
    """
    keep: Callable[[Any], Any]
    if driver == "mysqlclient":
        from MySQLdb import converters as mysqlclient

        table: dict[Any, Any] = dict(mysqlclient.conversions)
        keep = str
    else:
        table = dict(converters.conversions)
        keep = converters.through
    for type_code in AS_SERVER_TEXT:
        table[type_code] = keep
    table[FIELD_TYPE.DATETIME] = iso_datetime
    table[FIELD_TYPE.TIMESTAMP] = iso_datetime
    table[IdList] = _id_list
    return table


def _binary(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot put a {type(value).__name__} into listing JSON")


_stdlib_encode = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=_binary, check_circular=False
).encode
# JSONEncoder.encode builds a new C encoder on every call; one built here serves every
# row with the same settings (and so the same bytes).
_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_encoder = _make_c_encoder and _make_c_encoder(
    None, _binary, getattr(json.encoder, "c_encode_basestring", None), None, ":", ",",
    False, False, True,
)  # fmt: skip


def stdlib_dumps(obj: object) -> bytes:
    if _c_encoder is None:  # an interpreter without the C accelerator
        return _stdlib_encode(obj).encode("utf-8")
    return "".join(_c_encoder(obj, 0)).encode("utf-8")


try:
    import orjson

    def fast_dumps(obj: object) -> bytes:
        return orjson.dumps(obj, default=_binary)

except ImportError:  # the `fast` extra is not installed
    fast_dumps = stdlib_dumps

TINY_FLOAT = 1e-4  # below this (and above 0) orjson writes 0.00001 where json writes 1e-05

# A JSON string token, or whitespace between tokens (JSON has only these four).
_TOKEN_OR_SPACE = re.compile(r'"(?:[^"\\]|\\.)*"|[ \t\n\r]+')


class InvalidJSON(ValueError):
    """A json_columns value that is not valid JSON: that listing is skipped, not mangled."""

    def __init__(self, column: str, reason: str) -> None:
        super().__init__(f"column `{column}` is not valid JSON: {reason}")
        self.column = column
        self.reason = reason


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def embedded_json(column: str, value: str | bytes) -> bytes:
    """The JSON text of a json_columns value, checked and compacted, ready to embed."""
    try:
        text = value.decode("utf-8") if isinstance(value, bytes) else value
        json.loads(text, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidJSON(column, str(exc)) from None
    return _TOKEN_OR_SPACE.sub(_keep_strings, text).encode("utf-8")


def _keep_strings(match: re.Match[str]) -> str:
    token = match[0]
    return token if token[0] == '"' else ""


class ListingEncoder:
    """Turns rows of one result set into listing JSON bytes, keys in column order.

    orjson, when installed, encodes rows several times faster than the stdlib and gives
    the same bytes, except for tiny floats: rows holding one take the stdlib path.
    """

    def __init__(
        self,
        description: Sequence[Sequence[Any]],
        *,
        dumps: Dumps | None = None,
        json_columns: Sequence[str] = (),
    ) -> None:
        columns = [str(d[0]) for d in description]
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        if duplicates:
            raise ValueError(f"listing query returns column(s) {', '.join(duplicates)} twice")
        if "id" not in columns:
            raise ValueError("listing query returns no column named `id`")
        missing = [c for c in json_columns if c not in columns]
        if missing:
            raise ValueError(
                f"[warm] json_columns names {', '.join(missing)}, "
                "which the listing query does not return"
            )
        self.columns = tuple(columns)
        self.id_index = self.columns.index("id")
        self._floats = tuple(i for i, d in enumerate(description) if d[1] in FLOAT_TYPES)
        self._dumps = dumps or fast_dumps
        self._json = frozenset(self.columns.index(c) for c in json_columns)
        # '{"name":' then ',"name":' ...: the listing is assembled around embedded JSON.
        self._keys = tuple(
            (b"{" if i == 0 else b",") + stdlib_dumps(c) + b":" for i, c in enumerate(columns)
        )

    def encode(self, row: Sequence[Any]) -> bytes:
        """The row's listing JSON; raises InvalidJSON for a bad json_columns value."""
        if self._json:
            return self._assemble(row)
        record = dict(zip(self.columns, row, strict=True))
        if self._dumps is not stdlib_dumps:
            for i in self._floats:
                value = row[i]
                if value and -TINY_FLOAT < value < TINY_FLOAT:
                    return stdlib_dumps(record)
        return self._dumps(record)

    def _assemble(self, row: Sequence[Any]) -> bytes:
        """Key by key, the bytes the whole-record dumps would give, with the JSON embedded."""
        parts = []
        for i, (key, value) in enumerate(zip(self._keys, row, strict=True)):
            if i in self._json and isinstance(value, str | bytes):
                parts.append(key + embedded_json(self.columns[i], value))
            elif value and i in self._floats and -TINY_FLOAT < value < TINY_FLOAT:
                parts.append(key + stdlib_dumps(value))
            else:
                parts.append(key + self._dumps(value))
        parts.append(b"}")
        return b"".join(parts)
