"""The inline row reader's wire format: packets over 16 MB, long length prefixes, errors."""

from __future__ import annotations

import io

import pytest
from pymysql import err

from cachewarm.mysql.driver_pymysql import MAX_PACKET_LEN, Result, _payload


class Wire:
    """The parts of a PyMySQL connection the reader uses, reading from bytes."""

    def __init__(self, data: bytes, *, raw: bool = True) -> None:
        self._buf = io.BytesIO(data)
        self._next_seq_id = 0
        self.closed = False
        self.raw_rows = raw
        self.encoding = "utf8"

    def _read_bytes(self, n: int) -> bytes:
        return self._buf.read(n)

    def _force_close(self) -> None:
        self.closed = True


def packet(seq: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


def split(seq: int, payload: bytes) -> bytes:
    """The payload as the server sends it: 16 MB - 1 packets, then a shorter (maybe empty) one."""
    out = b""
    while True:
        part, payload = payload[:MAX_PACKET_LEN], payload[MAX_PACKET_LEN:]
        out += packet(seq, part)
        seq += 1
        if len(part) < MAX_PACKET_LEN:
            return out


@pytest.mark.parametrize("size", [10, MAX_PACKET_LEN - 1, MAX_PACKET_LEN, MAX_PACKET_LEN + 10])
def test_payload_joins_packets_over_16_mb(size: int) -> None:
    big = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    wire = Wire(split(0, big) + packet(9, b"next"))
    assert _payload(wire) == big
    assert wire._next_seq_id == (size // MAX_PACKET_LEN) + 1


def test_wrong_sequence_number_closes_the_connection() -> None:
    wire = Wire(packet(3, b"x"))
    with pytest.raises(err.InternalError, match="got 3 expected 0"):
        _payload(wire)
    assert wire.closed


def test_sequence_zero_mid_result_is_a_lost_connection() -> None:
    wire = Wire(packet(0, b"x"))
    wire._next_seq_id = 5
    with pytest.raises(err.OperationalError, match="Lost connection"):
        _payload(wire)
    assert wire.closed


def lenenc(value: bytes) -> bytes:
    n = len(value)
    if n < 251:
        return bytes([n]) + value
    if n < 2**16:
        return b"\xfc" + n.to_bytes(2, "little") + value
    if n < 2**24:
        return b"\xfd" + n.to_bytes(3, "little") + value
    return b"\xfe" + n.to_bytes(8, "little") + value


def result(
    wire: Wire, converters: list[tuple[str | None, object]], *, unbuffered: bool = False
) -> Result:
    """A result past its column descriptions, reading rows from `wire`."""
    res = Result.__new__(Result)
    res.connection = wire  # type: ignore[assignment]
    res.converters = converters  # type: ignore[attr-defined]
    res.unbuffered_active = unbuffered
    return res


EOF_PACKET = b"\xfe\x00\x00\x02\x00"


@pytest.mark.parametrize("raw", [True, False])
def test_rows_with_every_length_prefix(raw: bool) -> None:
    fields = [b"7", b"", b"a" * 300, "é".encode() * 40000, b"b" * (2**24 + 5)]
    row = b"".join(lenenc(f) for f in fields[:2]) + b"\xfb" + b"".join(map(lenenc, fields[2:]))
    wire = Wire(split(0, row) + packet(len(row) // MAX_PACKET_LEN + 1, EOF_PACKET), raw=raw)
    text = ("utf8", None)
    res = result(wire, [("ascii", int), text, text, text, text, (None, None)])
    res._read_rowdata_packet()
    expected: tuple[object, ...] = (
        b"7",
        b"",
        None,
        b"a" * 300,
        "é".encode() * 40000,
        b"b" * (2**24 + 5),
    )
    if not raw:
        expected = (7, "", None, "a" * 300, "é" * 40000, b"b" * (2**24 + 5))
    assert res.rows == (expected,)
    assert res.affected_rows == 1


def test_an_error_packet_mid_result_raises_the_server_error() -> None:
    row = lenenc(b"1")
    error = b"\xff" + (1969).to_bytes(2, "little") + b"#70100Query execution was interrupted"
    res = result(Wire(packet(0, row) + packet(1, error)), [("ascii", int)], unbuffered=True)
    assert res._read_rowdata_packet_unbuffered() == (b"1",)
    with pytest.raises(err.OperationalError) as raised:
        res._read_rowdata_packet_unbuffered()
    assert raised.value.args[0] == 1969
    assert not res.unbuffered_active
