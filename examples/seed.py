"""Load the sample shop (examples/schema.sql) with deterministic, awkward data.

The data is meant to break naive cache code: emoji and non-Latin text, quotes,
backslashes, newlines, NULLs, empty strings, DECIMAL edge values and binary
thumbnails; sales are Zipf-skewed so a few products are clearly the hottest.
Timestamps are relative to the server's NOW(), so the "last day" hot query
finds the recent order lines whatever the clock or time zone.

    python examples/seed.py --url mysql://root@127.0.0.1:3307/shop --products 1000

Rows are streamed as TSV chunks into LOAD DATA LOCAL INFILE on a second thread
while the next chunk is generated, so 1M products load in well under 2 minutes.
Servers that forbid LOAD DATA LOCAL get multi-row INSERTs instead (slower).
"""

from __future__ import annotations

import argparse
import itertools
import os
import queue
import random
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, TypeVar
from urllib.parse import unquote, urlsplit

import pymysql
from pymysql.connections import Connection

SCHEMA_PATH = Path(__file__).resolve().with_name("schema.sql")

# The queries cachewarm is configured with (demo, tests, benchmarks).
HOT_QUERY = (
    "SELECT product_id FROM order_lines WHERE ordered_at >= NOW() - INTERVAL 1 DAY "
    "GROUP BY product_id ORDER BY SUM(qty) DESC, product_id LIMIT %(limit)s"
)
_LISTING_COLUMNS = (
    "SELECT p.id, p.sku, p.name, p.description, p.price, p.weight_kg, p.released_on, "
    "p.updated_at, p.thumbnail, c.name AS category, c.slug AS category_slug"
)
_LISTING_FROM = " FROM products p JOIN categories c ON c.id = p.category_id WHERE p.id IN %(ids)s"
LISTING_QUERY = _LISTING_COLUMNS + " " + _LISTING_FROM.lstrip()
# The same with each product's images as a real JSON array ([] when it has none), for
# `[warm] json_columns = ["images"]`. ORDER BY inside JSON_ARRAYAGG is MariaDB's (10.5+);
# MySQL 8 does not take it.
_IMAGES = (
    "COALESCE((SELECT JSON_ARRAYAGG(JSON_OBJECT('url', i.url, 'alt', i.alt, 'width', i.width) "
    "ORDER BY i.position) FROM product_images i WHERE i.product_id = p.id), JSON_ARRAY()) "
    "AS images"
)
LISTING_QUERY_WITH_IMAGES = f"{_LISTING_COLUMNS}, {_IMAGES}{_LISTING_FROM}"
JSON_COLUMNS = ("images",)

ZIPF_S = 1.0  # popularity of the product at rank r is proportional to 1 / r**ZIPF_S
RECENT_FRACTION = 0.9  # share of order lines inside the last day
RECENT_MAX_AGE_S = 23 * 3600  # stays inside "NOW() - INTERVAL 1 DAY" for an hour
OLD_MAX_AGE_S = 30 * 86400
CHUNK_ROWS = 100_000
_DISALLOWED_LOCAL_INFILE = {1148, 2068, 3948, 3950}

CATEGORIES: list[tuple[str, str]] = [
    ("Kitchen & Dining", "kitchen-dining"),
    ("Kids' Toys", "kids-toys"),
    ("Garden & Outdoor", "garden-outdoor"),
    ("Home Office", "home-office"),
    ("Bath & Body", "bath-body"),
    ("Café & Tea ☕", "cafe-tea"),
    ("Bücher", "buecher"),
    ("Lighting", "lighting"),
    ("Power Tools", "power-tools"),
    ("Hand Tools", "hand-tools"),
    ("Camping", "camping"),
    ("Cycling", "cycling"),
    ("Running", "running"),
    ("Yoga & Pilates", "yoga-pilates"),
    ("Pet Supplies", "pet-supplies"),
    ("Aquarium", "aquarium"),
    ("Baby Care", "baby-care"),
    ("Stationery", "stationery"),
    ("Art Supplies", "art-supplies"),
    ("Sewing & Knitting", "sewing-knitting"),
    ("Board Games", "board-games"),
    ("Puzzles", "puzzles"),
    ("Audio", "audio"),
    ("Cameras", "cameras"),
    ("Phone Accessories", "phone-accessories"),
    ("Computer Parts", "computer-parts"),
    ("Smart Home", "smart-home"),
    ("Bedding", "bedding"),
    ("Furniture", "furniture"),
    ("Rugs & Carpets", "rugs-carpets"),
    ("Storage", "storage"),
    ("Cleaning", "cleaning"),
    ("Laundry", "laundry"),
    ("Coffee Makers", "coffee-makers"),
    ("Cookware", "cookware"),
    ("Bakeware", "bakeware"),
    ("Knives", "knives"),
    ("Tableware", "tableware"),
    ("Glassware", "glassware"),
    ("Wine & Bar", "wine-bar"),
    ("Snacks", "snacks"),
    ("Spices", "spices"),
    ("Health", "health"),
    ("Beauty", "beauty"),
    ("Watches", "watches"),
    ("Jewellery", "jewellery"),
    ("Bags & Luggage", "bags-luggage"),
    ("Shoes", "shoes"),
    ("Outerwear", "outerwear"),
    ("日本の雑貨", "japanese-goods"),
]

_BRANDS = [
    "Nordvik", "Acme", "Hollowell", "Brightline", "Kestrel", "Marlow & Co", "Tanaka",
    "Ostara", "Pine Hill", "Vetro", "Lumen", "Oakridge", "Saltmarsh", "Quill", "Fennel",
]  # fmt: skip
_ADJECTIVES = [
    "Classic", "Compact", "Deluxe", "Ergonomic", "Foldable", "Handmade", "Heavy-Duty",
    "Lightweight", "Minimalist", "Premium", "Rustic", "Slim", "Smart", "Vintage", "Waterproof",
]  # fmt: skip
_MATERIALS = [
    "Oak", "Bamboo", "Steel", "Cast Iron", "Ceramic", "Glass", "Linen", "Wool", "Leather",
    "Copper", "Walnut", "Cotton", "Silicone", "Marble", "Recycled",
]  # fmt: skip
_NOUNS = [
    "Coffee Table", "Desk Lamp", "Chef's Knife", "Water Bottle", "Backpack", "Cutting Board",
    "Teapot", "Notebook", "Headphones", "Plant Pot", "Throw Blanket", "Frying Pan",
    "Bookshelf", "Yoga Mat", "Wall Clock", "Dog Bed", "Bike Light", "Tent", "Serving Bowl",
]  # fmt: skip
_VARIANTS = [
    "",
    "",
    "",
    " \u2013 Large",
    " \u2013 Small",
    " (2-pack)",
    " 500 ml",
    " 30 cm",
    " Set of 4",
]
_SENTENCES = [
    "Built to last and easy to clean.",
    "Designed in our studio and tested for everyday use.",
    "Fits neatly on a shelf or in a drawer.",
    "Dishwasher safe; hand washing keeps the finish longer.",
    "Ships in plastic-free packaging.",
    "Each piece varies slightly in colour and grain.",
    "Covered by a two-year warranty.",
    "Pairs well with the rest of the collection.",
    "Lightweight enough to take anywhere.",
    "Assembly takes about ten minutes with the included tool.",
]
# Strings that break careless escaping, encoding or JSON handling.
TRICKY_NAMES = [
    'Mug "World\'s Best Dad" ☕',
    'Back\\slash Bracket 3/8\\" \\N',
    "Two-line\nlabel",
    "Tab\tseparated Tray",
    "東京 Tea Set 茶器セット",
    "Чайник электрический 1,7 л",
    "Σετ μαχαιροπήρουνα 24 τεμ.",
    "كوب قهوة سيراميك",
    "Emoji Party Pack 🔥🚀🎉👩‍👩‍👧",
    "Robert'); DROP TABLE products;--",
    "<script>alert('x')</script> & Co",
    "Zero\u200bwidth\u00a0Space Saver",
    "Cafe\u0301 Au Lait Bowl",
    # "Fraktur Calendar 2025" in mathematical letters/digits outside the BMP
    "\U0001d509\U0001d52f\U0001d51e\U0001d528\U0001d531\U0001d532\U0001d52f Calendar "
    "\U0001d7da\U0001d7d8\U0001d7da\U0001d7dd",
    "%(ids)s %s {id} Template Stencil",
    "   Padded Name With Spaces   ",
]
TRICKY_DESCRIPTIONS = [
    "Line one.\nLine two.\r\nLine three with a trailing backslash \\",
    'He said "it\'s \\"quoted\\"" twice.',
    "",
    "NULL",
    "\\N is not NULL here",
    "Ünïcödé everywhere: naïve café, Straße, ĳ, ﬁ, 🙂",
    '{"json": ["inside", "a", "description"], "n": 1.0}',
    "x" * 1000,
]
TRICKY_PRICES = ["0.00", "0.01", "0.10", "99999999.99", "1000000.01"]


@dataclass(frozen=True)
class SeedStats:
    """What was loaded and how long it took (the CLI prints it)."""

    database: str
    categories: int
    products: int
    order_lines: int
    seconds: float
    method: str


# One products row: id, sku, name, description, price, weight_kg, category_id,
# released_on, updated_at age in microseconds, thumbnail.
ProductRow = tuple[int, str, str, str | None, str, float | None, int, str | None, int, bytes | None]
# One order line: product_id, qty, ordered_at age in seconds.
OrderRow = tuple[int, int, int]


def is_tricky(product_id: int) -> bool:
    """Every tenth product carries awkward text/price values."""
    return product_id % 10 == 3


def generate_products(count: int, seed: int = 42) -> Iterator[ProductRow]:
    """Yield the products rows; same (count, seed) gives the same rows."""
    rng = random.Random(f"products-{seed}")
    for pid in range(1, count + 1):
        cat = rng.randrange(len(CATEGORIES)) + 1
        tricky = is_tricky(pid)
        if tricky:
            k = pid // 10
            name = TRICKY_NAMES[k % len(TRICKY_NAMES)]
            desc: str | None = TRICKY_DESCRIPTIONS[k % len(TRICKY_DESCRIPTIONS)]
            price = TRICKY_PRICES[k % len(TRICKY_PRICES)]
        else:
            name = (
                f"{rng.choice(_BRANDS)} {rng.choice(_ADJECTIVES)} {rng.choice(_MATERIALS)} "
                f"{rng.choice(_NOUNS)}{rng.choice(_VARIANTS)}"
            )
            r = rng.random()
            if r < 0.1:
                desc = None
            elif r < 0.11:
                desc = ""
            else:
                desc = " ".join(rng.sample(_SENTENCES, rng.randint(1, 2)))
            cents = max(1, int(rng.lognormvariate(7.5, 1.2)))
            price = f"{cents // 100}.{cents % 100:02d}"
        weight = None if rng.random() < 0.08 else round(rng.lognormvariate(0.0, 1.2), 3)
        released = (
            None
            if rng.random() < 0.15
            else f"{rng.randint(2012, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        )
        updated_age_us = rng.randrange(60_000_000, 365 * 86400 * 1_000_000)
        thumb = None if rng.random() < 0.2 else rng.randbytes(rng.randint(8, 48))
        sku = f"{CATEGORIES[cat - 1][1][:3].upper()}-{pid:08d}"
        yield (pid, sku, name, desc, price, weight, cat, released, updated_age_us, thumb)


def generate_order_lines(
    products: int, seed: int = 42, lines_per_product: float = 3.0
) -> Iterator[OrderRow]:
    """Yield Zipf-skewed order lines, oldest first (ids grow with time, as in a real shop)."""
    rng = random.Random(f"orders-{seed}")
    total = round(products * lines_per_product)
    if products == 0 or total == 0:
        return
    # Popularity rank -> product id: a shuffled permutation, so the hottest ids are
    # scattered rather than 1, 2, 3...
    by_rank = list(range(1, products + 1))
    rng.shuffle(by_rank)
    cum = list(itertools.accumulate(1.0 / (r**ZIPF_S) for r in range(1, products + 1)))
    recent = round(total * RECENT_FRACTION)
    ages = [rng.randint(RECENT_MAX_AGE_S + 7200, OLD_MAX_AGE_S) for _ in range(total - recent)]
    ages += [rng.randint(60, RECENT_MAX_AGE_S) for _ in range(recent)]
    ages.sort(reverse=True)
    step = CHUNK_ROWS
    for start in range(0, total, step):
        n = min(step, total - start)
        pids = rng.choices(by_rank, cum_weights=cum, k=n)
        qtys = rng.choices((1, 2, 3, 4, 5, 10), weights=(60, 20, 8, 5, 4, 3), k=n)
        yield from zip(pids, qtys, ages[start : start + n], strict=True)


# --- connections -----------------------------------------------------------------------------


class ConnectArgs(TypedDict):
    """Keyword arguments for pymysql.connect(), typed so `connect(**args)` checks."""

    host: str
    port: int
    user: str
    password: str
    database: str | None


def parse_url(url: str) -> ConnectArgs:
    """Split mysql://user:password@host:port/db into pymysql.connect() arguments.

    The password may instead come from CACHEWARM_MYSQL_PASSWORD, as for cachewarm.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"mysql", "mariadb", "mysql+pymysql"}:
        raise ValueError(f"not a mysql:// URL: {url!r}")
    password = unquote(parts.password) if parts.password is not None else None
    if password is None:
        password = os.environ.get("CACHEWARM_MYSQL_PASSWORD", "")
    database = unquote(parts.path.lstrip("/")) or None
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username) if parts.username else "root",
        "password": password,
        "database": database,
    }


def connect(
    url: str, *, database: str | None = None, server_only: bool = False, local_infile: bool = True
) -> Connection:
    """Open an autocommit utf8mb4 connection.

    database overrides the URL's path; server_only ignores both (for CREATE DATABASE).
    """
    args = parse_url(url)
    if database or server_only:
        args["database"] = None if server_only else database
    return pymysql.connect(
        **args, charset="utf8mb4", autocommit=True, local_infile=local_infile, connect_timeout=10
    )


def quote_ident(name: str) -> str:
    """Backtick-quote an identifier (database names come from users and tests)."""
    return "`" + name.replace("`", "``") + "`"


def _statements(sql: str) -> list[str]:
    sql = re.sub(r"^\s*--.*$", "", sql, flags=re.MULTILINE)
    return [s.strip() for s in sql.split(";") if s.strip()]


def load_schema(conn: Connection) -> None:
    """(Re)create the three shop tables in the connection's current database."""
    with conn.cursor() as cur:
        for stmt in _statements(SCHEMA_PATH.read_text(encoding="utf-8")):
            cur.execute(stmt)


# --- bulk loading ----------------------------------------------------------------------------

_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})

_PRODUCT_COLUMNS = (
    "(id, sku, name, description, price, weight_kg, category_id, released_on, @age, @thumb) "
    "SET updated_at = @seed_now - INTERVAL @age MICROSECOND, thumbnail = UNHEX(@thumb)"
)
_ORDER_COLUMNS = "(product_id, qty, @age) SET ordered_at = @seed_now - INTERVAL @age SECOND"


_NULL = "\\N"


def _tsv_text(value: str | None) -> str:
    return _NULL if value is None else value.translate(_TSV_ESCAPES)


def _product_tsv(row: ProductRow) -> str:
    pid, sku, name, desc, price, weight, cat, released, age, thumb = row
    w = _NULL if weight is None else repr(weight)
    t = _NULL if thumb is None else thumb.hex()
    return (
        f"{pid}\t{sku}\t{_tsv_text(name)}\t{_tsv_text(desc)}\t{price}\t"
        f"{w}\t{cat}\t{released or _NULL}\t{age}\t{t}\n"
    )


def _order_tsv(row: OrderRow) -> str:
    return f"{row[0]}\t{row[1]}\t{row[2]}\n"


class _Loader:
    """Runs LOAD DATA statements on a worker thread while the caller writes the next chunk."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.jobs: queue.Queue[tuple[str, Path] | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="seed-loader", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            table, path = job
            try:
                if self.error is None:
                    self._load(table, path)
            except BaseException as exc:
                self.error = exc
            finally:
                path.unlink(missing_ok=True)

    def _load(self, table: str, path: Path) -> None:
        columns = _PRODUCT_COLUMNS if table == "products" else _ORDER_COLUMNS
        with self.conn.cursor() as cur:
            cur.execute(
                f"LOAD DATA LOCAL INFILE %s INTO TABLE {table} CHARACTER SET utf8mb4 "
                f"FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
                f"{columns}",
                (str(path),),
            )

    def submit(self, table: str, path: Path) -> None:
        while True:
            self.check()
            try:
                self.jobs.put((table, path), timeout=0.5)
                return
            except queue.Full:
                continue

    def check(self) -> None:
        if self.error is not None:
            raise self.error
        if not self.thread.is_alive():
            raise RuntimeError("seed loader thread died")

    def finish(self) -> None:
        self.jobs.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


_T = TypeVar("_T")


def _chunks(rows: Iterable[_T], size: int) -> Iterator[list[_T]]:
    it = iter(rows)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _load_data_local(
    conn: Connection, products: Iterable[ProductRow], orders: Iterable[OrderRow]
) -> None:
    loader = _Loader(conn)
    with tempfile.TemporaryDirectory(prefix="cwseed-") as tmp:
        n = itertools.count()

        def write(table: str, lines: Iterable[str]) -> None:
            path = Path(tmp) / f"{table}-{next(n)}.tsv"
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                f.write("".join(lines))
            loader.submit(table, path)

        try:
            for pchunk in _chunks(products, CHUNK_ROWS):
                write("products", map(_product_tsv, pchunk))
            for ochunk in _chunks(orders, CHUNK_ROWS):
                write("order_lines", map(_order_tsv, ochunk))
        finally:
            loader.finish()


def _insert_rows(
    conn: Connection, products: Iterable[ProductRow], orders: Iterable[OrderRow]
) -> None:
    """Fallback for servers with local_infile=OFF (MySQL 8 default)."""
    esc = conn.escape
    with conn.cursor() as cur:
        for chunk in _chunks(products, 2000):
            values = ",".join(
                f"({pid},{esc(sku)},{esc(name)},{esc(desc)},{price},"
                f"{'NULL' if weight is None else repr(weight)},{cat},{esc(released)},"
                f"@seed_now - INTERVAL {age} MICROSECOND,"
                f"{'NULL' if thumb is None else 'X' + repr(thumb.hex())})"
                for pid, sku, name, desc, price, weight, cat, released, age, thumb in chunk
            )
            cur.execute(
                "INSERT INTO products (id, sku, name, description, price, weight_kg, "
                f"category_id, released_on, updated_at, thumbnail) VALUES {values}"
            )
        for ochunk in _chunks(orders, 10_000):
            values = ",".join(
                f"({pid},{qty},@seed_now - INTERVAL {age} SECOND)" for pid, qty, age in ochunk
            )
            cur.execute(f"INSERT INTO order_lines (product_id, qty, ordered_at) VALUES {values}")


def _add_images(conn: Connection) -> None:
    """Images derived from the products in SQL: fast at any size, and no new seed data."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO product_images (product_id, position, url, alt, width) "
            "SELECT p.id, n.pos, CONCAT('https://img.example.com/p/', p.id, '/', n.pos, '.jpg'), "
            "CASE WHEN n.pos = 1 THEN p.name WHEN MOD(p.id, 7) = 0 THEN NULL "
            "ELSE CONCAT('view ', n.pos, ' of \"', p.sku, '\" \\\\ ☕') END, 320 * n.pos "
            "FROM products p JOIN (SELECT 1 AS pos UNION ALL SELECT 2 UNION ALL SELECT 3) n "
            "ON n.pos <= MOD(p.id, 4)"
        )


def _local_infile_allowed(conn: Connection) -> bool:
    if not getattr(conn, "_local_infile", False):
        return False
    with conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.local_infile")
        row = cur.fetchone()
    return bool(row and int(row[0]))


def seed(
    conn_or_url: str | Connection,
    products: int,
    seed: int = 42,
    *,
    database: str | None = None,
    lines_per_product: float = 3.0,
    method: str = "auto",
    images: bool = True,
) -> SeedStats:
    """Create the database if missing, (re)load the schema and fill it deterministically.

    conn_or_url: a mysql:// URL (its path names the database unless `database` is
    given) or an open PyMySQL connection (open it with local_infile=True for speed).
    method: "auto", "load-data" or "insert".
    images: give 0 to 3 images to each product (id % 4 of them; awkward alt texts).
    """
    started = time.perf_counter()
    own = isinstance(conn_or_url, str)
    conn = connect(conn_or_url, server_only=True) if isinstance(conn_or_url, str) else conn_or_url
    try:
        if database is None:
            if isinstance(conn_or_url, str):
                database = parse_url(conn_or_url)["database"]
            else:
                with conn.cursor() as cur:
                    cur.execute("SELECT DATABASE()")
                    row = cur.fetchone()
                database = row[0] if row else None
        if not database:
            raise ValueError("no database given: put it in the URL path or pass database=")
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE DATABASE IF NOT EXISTS {quote_ident(database)} "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        conn.select_db(database)
        load_schema(conn)
        with conn.cursor() as cur:
            cur.execute("SET @seed_now = NOW(6), unique_checks = 0, foreign_key_checks = 0")
            cur.executemany(
                "INSERT INTO categories (id, name, slug) VALUES (%s, %s, %s)",
                [(i, name, slug) for i, (name, slug) in enumerate(CATEGORIES, start=1)],
            )
        if method == "auto":
            method = "load-data" if _local_infile_allowed(conn) else "insert"
        load = _load_data_local if method == "load-data" else _insert_rows
        load(
            conn,
            generate_products(products, seed),
            generate_order_lines(products, seed, lines_per_product),
        )
        if images:
            _add_images(conn)
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM order_lines")
            row = cur.fetchone()
            lines = int(row[0]) if row else 0
            cur.execute("SET unique_checks = 1, foreign_key_checks = 1")
            # Without fresh statistics right after a bulk load, MariaDB plans the
            # listing query (IN list of 1000 ids) as a scan: ~2 s instead of ~10 ms.
            cur.execute("ANALYZE TABLE categories, products, order_lines, product_images")
            cur.fetchall()
    finally:
        if own:
            conn.close()
    return SeedStats(
        database=database,
        categories=len(CATEGORIES),
        products=products,
        order_lines=lines,
        seconds=time.perf_counter() - started,
        method=method,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: seed the database named in --url."""
    parser = argparse.ArgumentParser(description="Create and fill the sample shop database.")
    parser.add_argument("--url", required=True, help="mysql://user[:pw]@host:port/database")
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lines-per-product", type=float, default=3.0)
    parser.add_argument("--method", choices=["auto", "load-data", "insert"], default="auto")
    args = parser.parse_args(argv)
    stats = seed(
        args.url,
        args.products,
        args.seed,
        lines_per_product=args.lines_per_product,
        method=args.method,
    )
    print(
        f"seeded {stats.database}: {stats.categories} categories, {stats.products} products, "
        f"{stats.order_lines} order lines in {stats.seconds:.2f}s ({stats.method})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
