"""MySQL values to listing JSON: the whole type mapping, in one place.

The driver is told to hand over DECIMAL, DATE and TIME as the server's own text and
DATETIME already in ISO 8601, so the hot path never builds Decimal or datetime objects
only to turn them back into strings. What is left for Python is one dict and one
C-accelerated `json` call per row; bytes (binary columns) reach `default` and become
base64. With PyMySQL the rows come raw (see driver_pymysql), and ListingEncoder.raw
writes each field whose JSON is the server's own text straight from its bytes, by the
same mapping, with the same bytes as a result.

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
import binascii
import json
import json.encoder
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


def iso_datetime_bytes(raw: bytes) -> bytes:
    """iso_datetime() of a raw DATETIME field, by slicing: the server's text has one shape."""
    if raw[10:11] != b" " or raw[19:20] not in (b"", b"."):
        return iso_datetime(raw.decode("ascii")).encode("ascii")
    fraction = raw[20:]
    if fraction.strip(b"0"):
        return raw[:10] + b"T" + raw[11:19] + b"." + fraction.ljust(6, b"0")
    return raw[:10] + b"T" + raw[11:19]


FLOAT_TYPES = (FIELD_TYPE.FLOAT, FIELD_TYPE.DOUBLE)
AS_SERVER_TEXT = (FIELD_TYPE.DECIMAL, FIELD_TYPE.NEWDECIMAL, FIELD_TYPE.DATE, FIELD_TYPE.TIME)
# Raw field text that is already the JSON spelling (less zerofill's leading zeros).
INTEGER_TYPES = (
    FIELD_TYPE.TINY, FIELD_TYPE.SHORT, FIELD_TYPE.INT24, FIELD_TYPE.LONG, FIELD_TYPE.LONGLONG,
)  # fmt: skip
DATETIME_TYPES = (FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP)
STRING_TYPES = (
    FIELD_TYPE.STRING, FIELD_TYPE.VAR_STRING, FIELD_TYPE.VARCHAR, FIELD_TYPE.JSON,
    FIELD_TYPE.TINY_BLOB, FIELD_TYPE.BLOB, FIELD_TYPE.MEDIUM_BLOB, FIELD_TYPE.LONG_BLOB,
)  # fmt: skip
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


# A byte JSON must escape inside a string; text without one is its own JSON spelling.
_NEEDS_ESCAPE = re.compile(rb'[\x00-\x1f"\\]').search


@dataclass(frozen=True)
class RawColumn:
    """A result column as the driver describes it, for spelling its raw bytes as JSON."""

    type_code: int
    text: bool  # the driver decodes it (False: binary, bytes)
    zerofill: bool
    decode: Callable[[bytes], Any]  # the driver's own bytes -> value


RawRow = Sequence[bytes | None]  # each field's bytes as the server sent them; None = NULL
# How ListingEncoder.raw spells a field: its bytes as they are, quoted, quoted after the
# ISO 8601 rewrite, text (quoted unless it needs escapes), base64, embedded JSON, or
# whatever encode() makes of the driver's value.
_NUMBER, _QUOTED, _DATETIME, _TEXT, _BINARY, _EMBED, _VALUE = range(7)


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
        parts = [
            key + self._value(i, value)
            for i, (key, value) in enumerate(zip(self._keys, row, strict=True))
        ]
        parts.append(b"}")
        return b"".join(parts)

    def _value(self, i: int, value: Any) -> bytes:
        """One value as the whole-record dumps would spell it (the dumps agree on scalars)."""
        if i in self._json and isinstance(value, str | bytes):
            return embedded_json(self.columns[i], value)
        if value and i in self._floats and -TINY_FLOAT < value < TINY_FLOAT:
            return stdlib_dumps(value)
        return self._dumps(value)

    def raw(self, columns: Sequence[RawColumn]) -> Callable[[RawRow], bytes]:
        """encode() for rows of raw field bytes, giving the same bytes as encode() would.

        Integers, DECIMAL, DATE, TIME and DATETIME are written from the server's text,
        text without a byte to escape as it is and binary as base64: no Python value is
        built only to be printed again. Anything else (floats, text that needs escapes,
        BIT, zerofill, ...) goes through the driver's decoding and _value().
        """
        plan = tuple(
            (i, key, key + b'"', self._kind(i, column), column.decode)
            for i, (key, column) in enumerate(zip(self._keys, columns, strict=True))
        )
        value_of, dumps, columns_ = self._value, self._dumps, self.columns
        b64 = binascii.b2a_base64

        def encode(row: RawRow) -> bytes:
            parts: list[bytes] = []
            append = parts.append
            for (i, key, quote, kind, decode), raw in zip(plan, row, strict=True):
                if raw is None:
                    append(key + b"null")
                elif kind == _NUMBER:
                    append(key + raw)
                elif kind == _QUOTED:
                    append(quote + raw + b'"')
                elif kind == _TEXT:
                    # Not ASCII: decoded only to fail on bad UTF-8 as the driver would.
                    if _NEEDS_ESCAPE(raw) is None and (raw.isascii() or decode(raw)):
                        append(quote + raw + b'"')
                    else:
                        append(key + dumps(decode(raw)))
                elif kind == _DATETIME:
                    append(quote + iso_datetime_bytes(raw) + b'"')
                elif kind == _BINARY:
                    append(quote + b64(raw, newline=False) + b'"')
                elif kind == _EMBED:
                    append(key + embedded_json(columns_[i], raw))
                else:
                    append(key + value_of(i, decode(raw)))
            append(b"}")
            return b"".join(parts)

        return encode

    def _kind(self, i: int, column: RawColumn) -> int:
        code = column.type_code
        if i in self._json:  # embedded when the driver's value is a str or bytes
            return _EMBED if code in STRING_TYPES else _VALUE
        if code in STRING_TYPES:
            return _TEXT if column.text else _BINARY
        if code in INTEGER_TYPES and not column.zerofill:
            return _NUMBER
        if code in AS_SERVER_TEXT:
            return _QUOTED
        if code in DATETIME_TYPES:
            return _DATETIME
        return _VALUE
