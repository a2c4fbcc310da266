"""Comparing what the variants wrote: key sets, bytes, and (to explain a difference) the
fields of the parsed JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import redis
from catalog import PREFIX, VERSION

KEY_PATTERN = f"{PREFIX}:v{VERSION}:product:*"


def product_keys(client: redis.Redis) -> set[bytes]:
    return set(client.scan_iter(match=KEY_PATTERN, count=10_000))


def values(client: redis.Redis, keys: Sequence[bytes], chunk: int = 5000) -> Iterator[bytes]:
    for start in range(0, len(keys), chunk):
        for value in client.mget(keys[start : start + chunk]):
            if not isinstance(value, bytes):
                raise RuntimeError("a listing vanished while the variants were compared")
            yield value


def compare_bytes(a: redis.Redis, b: redis.Redis, keys: Sequence[bytes]) -> list[bytes]:
    """The keys whose values differ."""
    pairs = zip(keys, values(a, keys), values(b, keys), strict=True)
    return [k for k, va, vb in pairs if va != vb]


def field_differences(
    a: redis.Redis, b: redis.Redis, keys: Sequence[bytes], a_name: str, b_name: str
) -> list[str]:
    """Per JSON field, how many of `keys` differ and one example: says where two
    encoders part ways when their bytes do."""
    counts: dict[str, int] = {}
    examples: dict[str, tuple[object, object]] = {}

    def note(name: str, x: object, y: object) -> None:
        counts[name] = counts.get(name, 0) + 1
        examples.setdefault(name, (x, y))

    for va, vb in zip(values(a, keys), values(b, keys), strict=True):
        ja, jb = json.loads(va), json.loads(vb)
        if list(ja) != list(jb):
            note("(key order or set)", list(ja), list(jb))
        for name in ja:
            x, y = ja.get(name), jb.get(name)
            if json.dumps(x, ensure_ascii=False) != json.dumps(y, ensure_ascii=False):
                note(name, x, y)
    if not counts:
        return ["same fields and values as parsed JSON: the difference is in the spelling"]
    return [
        f"`{name}`: {counts[name]} listings differ, e.g. {a_name} `{_short(examples[name][0])}` "
        f"vs {b_name} `{_short(examples[name][1])}`"
        for name in sorted(counts)
    ]


def _short(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
