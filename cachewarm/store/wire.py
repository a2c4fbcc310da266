"""RESP by hand: script calls packed once, as bytes, and sent without redis-py's packer.

A warm's hot loop is packing its write calls. redis-py's generic packer copies every
argument and cannot send a call again with another head, so calls are packed here:
once per call, with only the head (EVALSHA sha, or EVAL body after a NOSCRIPT) left
to choose when it is sent, and a multi-megabyte argument (a big hot list) never copied.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

COPY_LIMIT = 1 << 20  # arguments this large (a big hot list) are sent without a copy

Reply = Callable[[Any], None]


def pack(args: Sequence[bytes | bytearray]) -> list[bytes | bytearray]:
    """One RESP command as chunks, each argument passed through uncopied.

    Much cheaper than redis-py's generic packer for long argument lists; a caller joins
    the chunks of small commands, and sends those of a multi-megabyte one as they are.
    """
    chunks: list[bytes | bytearray] = [b"*%d\r\n" % len(args)]
    for value in args:
        chunks += (b"$%d\r\n" % len(value), value, b"\r\n")
    return chunks


def arg(value: bytes | bytearray) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def pack_args(values: Iterable[bytes | bytearray]) -> list[bytes | bytearray]:
    """RESP of these arguments: small ones joined, a large one (a hot list) left uncopied."""
    chunks: list[bytes | bytearray] = []
    small: list[bytes] = []
    for value in values:
        if len(value) < COPY_LIMIT:
            small.append(arg(value))
        else:
            chunks += (b"".join(small), b"$%d\r\n" % len(value), value, b"\r\n")
            small = []
    if small:
        chunks.append(b"".join(small))
    return chunks


def coalesce(chunks: list[bytes | bytearray]) -> list[bytes | bytearray]:
    """Runs of small chunks joined (one sendall each), large ones passed uncopied."""
    out: list[bytes | bytearray] = []
    small: list[bytes | bytearray] = []
    for chunk in chunks:
        if len(chunk) < COPY_LIMIT:
            small.append(chunk)
        else:
            if small:
                out.append(b"".join(small))
                small = []
            out.append(chunk)
    if small:
        out.append(b"".join(small))
    return out


def numkeys(count: int, *, across: bool) -> list[bytes]:
    """The arguments before the keys: numkeys, or 0 and the count for an ACROSS script."""
    return [b"0", b"%d" % count] if across else [b"%d" % count]


@dataclass(frozen=True)
class Script:
    """A Lua script as sent: its body and the SHA1 that EVALSHA names it by.

    `across`: the same script taking its keys in ARGV, for one call per cluster node
    (see scripts.ACROSS_SLOTS); None for a script whose keys always share a slot.
    """

    body: bytes
    sha: bytes
    across: Script | None = field(default=None, compare=False)

    @classmethod
    def of(cls, text: str, *, across_prelude: str | None = None) -> Script:
        body = text.encode()
        sha = hashlib.sha1(body, usedforsecurity=False).hexdigest().encode()
        across = None if across_prelude is None else cls.of(across_prelude + text)
        return cls(body, sha, across)

    def variant(self, *, across: bool) -> Script:
        """This script, or its variant taking keys in ARGV when the call spans slots."""
        if not across:
            return self
        if self.across is None:
            raise ValueError("this script's keys share one slot: it has no ACROSS variant")
        return self.across

    def head(self, *, by_sha: bool) -> bytes:
        """The RESP of `EVALSHA sha` or `EVAL body`, the first two arguments of a call."""
        return arg(b"EVALSHA") + arg(self.sha) if by_sha else arg(b"EVAL") + arg(self.body)


@dataclass
class Call:
    """One script call: the slot its keys are in (the first's), what to send, who gets the reply.

    `body` is the RESP of everything after the script (numkeys, keys, args), packed
    once: only the head differs between EVALSHA and a re-sent EVAL. A call spanning
    slots has `split`: the same work as one call per slot, for when its node refuses.
    """

    script: Script
    slot: int
    count: int  # arguments in body
    body: list[bytes | bytearray]
    on_reply: Reply
    split: Callable[[], list[Call]] | None = None

    @classmethod
    def of(
        cls,
        script: Script,
        slot: int,
        keys: Sequence[bytes],
        args: Sequence[bytes | bytearray],
        on_reply: Reply,
        *,
        across: bool = False,
    ) -> Call:
        values = [*numkeys(len(keys), across=across), *keys, *args]
        return cls(script.variant(across=across), slot, len(values), pack_args(values), on_reply)

    def command(self, *, by_sha: bool) -> list[bytes | bytearray]:
        return [b"*%d\r\n" % (self.count + 2), self.script.head(by_sha=by_sha), *self.body]
