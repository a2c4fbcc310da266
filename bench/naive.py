"""The naive warmer the benchmark compares against: one SELECT and one SET per product.

What a first cron script usually looks like: run the hot query, then for each id run
the listing query for that id alone and SET the JSON with redis-py, un-pipelined, so
every product costs two network round trips. The JSON follows the listing contract
(DECIMAL as string, DATETIME ISO 8601, binary base64) with its own plain encoder, so
its values double as an independent check of cachewarm's encoding.

    python bench/naive.py --mysql-url mysql://root@127.0.0.1:PORT/db \
        --redis-url redis://127.0.0.1:PORT/2 --hot-query "..." --listing-query "..." \
        --limit 10000 --prefix bench
"""

from __future__ import annotations

import argparse
import base64
import datetime
import decimal
import json
import sys
from urllib.parse import unquote, urlsplit

import pymysql
import redis


def _default(value: object) -> str:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot encode {type(value).__name__}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mysql-url", required=True, help="mysql://user@host:port/database")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--hot-query", required=True, help="with %%(limit)s")
    parser.add_argument("--listing-query", required=True, help="with %%(ids)s")
    parser.add_argument("--limit", type=int, required=True)
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--ttl", type=int, default=900, help="seconds")
    args = parser.parse_args(argv)

    url = urlsplit(args.mysql_url)
    conn = pymysql.connect(
        host=url.hostname or "127.0.0.1",
        port=url.port or 3306,
        user=unquote(url.username or "root"),
        password=unquote(url.password or ""),
        database=unquote(url.path.lstrip("/")),
        charset="utf8mb4",
        autocommit=True,
    )
    client = redis.Redis.from_url(args.redis_url)
    written = 0
    try:
        with conn.cursor() as cur:
            cur.execute(args.hot_query, {"limit": args.limit})
            ids = [int(row[0]) for row in cur.fetchall()]
            for product_id in ids:
                cur.execute(args.listing_query, {"ids": (product_id,)})
                row = cur.fetchone()
                if row is None:
                    continue
                columns = [d[0] for d in cur.description or ()]
                payload = json.dumps(
                    dict(zip(columns, row, strict=True)),
                    ensure_ascii=False,
                    separators=(",", ":"),
                    default=_default,
                )
                key = f"{args.prefix}:v{args.version}:product:{product_id}"
                client.set(key, payload.encode("utf-8"), px=args.ttl * 1000)
                written += 1
    finally:
        conn.close()
        client.close()
    print(f"naive: {len(ids)} hot, {written} written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
