"""The catalogs the benchmark seeds, and the two ways each is read: cachewarm's listing
query and the C pipeline's SQL that builds the same listing JSON itself.

Both are generated from one column list, so they cannot drift apart: each column says
how the listing contract spells its type, and `c_json` writes that spelling in SQL:

| kind     | contract                     | SQL                                         |
|----------|------------------------------|---------------------------------------------|
| int      | number                       | the value                                   |
| decimal  | string, the server's digits  | '"' value '"'                               |
| double   | number, Python's repr        | the value, ".0" appended when whole         |
| date     | "YYYY-MM-DD"                 | '"' value '"'                               |
| datetime | ISO 8601, ".ffffff" if != 0  | DATE_FORMAT, with %f only when non-zero     |
| text     | JSON string, utf8mb4 as is   | JSON_QUOTE                                  |
| binary   | base64, unwrapped            | TO_BASE64 without its line breaks           |

NULL is `null` everywhere. The SQL spelling equals cachewarm's byte for byte except where
the two formatters part ways, which neither catalog reaches (README: "On equal terms").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import seed as shop  # examples/seed.py

PREFIX = "bench"
VERSION = 1
# Longer than a whole size's runs: at 10M the steady-state check compares listings
# written half an hour earlier, and an expired one would fail it.
TTL_S = 7200


@dataclass(frozen=True)
class Column:
    key: str  # the listing's JSON key
    sql: str  # the expression in the listing query, e.g. "p.price" or "c.name"
    kind: str  # how the contract spells it; see the module docstring

    @property
    def select(self) -> str:
        tail = self.sql.rsplit(".", 1)[-1]
        return self.sql if tail == self.key else f"{self.sql} AS {self.key}"

    @property
    def c_json(self) -> str:
        x = self.sql
        spelled = {
            "int": f"CONCAT({x})",
            "decimal": f"CONCAT('\"', {x}, '\"')",
            "date": f"CONCAT('\"', {x}, '\"')",
            "double": f"IF({x} = FLOOR({x}), CONCAT({x}, '.0'), CONCAT({x}))",
            "datetime": f"IF(MICROSECOND({x}) = 0, DATE_FORMAT({x}, '\"%Y-%m-%dT%H:%i:%s\"'), "
            f"DATE_FORMAT({x}, '\"%Y-%m-%dT%H:%i:%s.%f\"'))",
            "text": f"JSON_QUOTE({x})",
            "binary": f"CONCAT('\"', REPLACE(TO_BASE64({x}), '\\n', ''), '\"')",
        }[self.kind]
        return f"IFNULL({spelled}, 'null')"


@dataclass(frozen=True)
class Catalog:
    name: str
    shape: str  # one line for the results: what a row holds
    table: str  # the products table of the listing query, e.g. "products p"
    joins: str  # the JOINs that follow it
    id_sql: str  # the product id in that clause
    columns: tuple[Column, ...]
    hot_query: str  # every product, hottest first, with %(limit)s
    changed_query: str
    update_1pct: str  # changes 1% of the listings (ids divisible by 100)
    load: Callable[[str, int, str], None]  # (server URL, products, database)

    @property
    def listing_query(self) -> str:
        columns = ", ".join(c.select for c in self.columns)
        source = f"{self.table} {self.joins}".rstrip()
        return f"SELECT {columns} FROM {source} WHERE {self.id_sql} IN %(ids)s"

    def c_pipeline_sql(self, limit: int) -> str:
        """One statement whose every output line is a RESP `SET key listing PX ttl` for
        one hot product; the mariadb client ends each line with the '\\n' after the '\\r'.

        The hot ids come first in the FROM clause, as in cachewarm's batches: ~5% faster
        than listing them last, where the planner starts from the joined tables."""
        ttl_ms = str(TTL_S * 1000)
        pieces = ", ',', ".join(f"'{json.dumps(c.key)}:', {c.c_json}" for c in self.columns)
        hot = self.hot_query % {"limit": limit}
        return (
            "SELECT CONCAT('*5\\r\\n$3\\r\\nSET\\r\\n$', LENGTH(t.k), '\\r\\n', t.k, "
            "'\\r\\n$', LENGTH(t.v), '\\r\\n', t.v, "
            f"'\\r\\n$2\\r\\nPX\\r\\n${len(ttl_ms)}\\r\\n{ttl_ms}\\r')\n"
            f"FROM (SELECT CONCAT('{PREFIX}:v{VERSION}:product:', {self.id_sql}) AS k,\n"
            f"  CONCAT('{{', {pieces}, '}}') AS v\n"
            f"  FROM ({hot}) h JOIN {self.table} ON {self.id_sql} = h.id {self.joins}) t;\n"
        )

    def seed(self, server_url: str, n: int, database: str) -> float:
        """Create and fill `database` with n products; returns the seconds it took."""
        t0 = time.perf_counter()
        self.load(server_url, n, database)
        return time.perf_counter() - t0


def _seed_sample(server_url: str, n: int, database: str) -> None:
    shop.seed(server_url, n, database=database)


def _seed_sql(schema: str) -> Callable[[str, int, str], None]:
    """A loader that runs `schema` (with {n} = products) in a fresh utf8mb4 database."""

    def load(server_url: str, n: int, database: str) -> None:
        if n < 1:
            raise ValueError("a generated catalog needs at least one product")
        conn = shop.connect(server_url, server_only=True)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    f"CREATE DATABASE IF NOT EXISTS {shop.quote_ident(database)} "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
                conn.select_db(database)
                for statement in schema.replace("{n}", str(n)).split(";\n"):
                    if statement.strip():
                        cur.execute(statement)
                        cur.fetchall()
        finally:
            conn.close()

    return load


SAMPLE = Catalog(
    name="sample",
    shape="the sample shop (examples/seed.py): 11 columns, ~150 bytes of JSON, one JOIN",
    table="products p",
    joins="JOIN categories c ON c.id = p.category_id",
    id_sql="p.id",
    columns=(
        Column("id", "p.id", "int"),
        Column("sku", "p.sku", "text"),
        Column("name", "p.name", "text"),
        Column("description", "p.description", "text"),
        Column("price", "p.price", "decimal"),
        Column("weight_kg", "p.weight_kg", "double"),
        Column("released_on", "p.released_on", "date"),
        Column("updated_at", "p.updated_at", "datetime"),
        Column("thumbnail", "p.thumbnail", "binary"),
        Column("category", "c.name", "text"),
        Column("category_slug", "c.slug", "text"),
    ),
    # The shop's ranking (units sold in the last day), extended with the products that
    # sold nothing so that LIMIT N makes every product hot; examples/seed.py's own
    # HOT_QUERY only returns the ~half of the products with a sale in the last day.
    hot_query=(
        "SELECT p.id AS id FROM products p LEFT JOIN (SELECT product_id, SUM(qty) AS q "
        "FROM order_lines WHERE ordered_at >= NOW() - INTERVAL 1 DAY GROUP BY product_id) s "
        "ON s.product_id = p.id ORDER BY COALESCE(s.q, 0) DESC, p.id LIMIT %(limit)s"
    ),
    changed_query="SELECT id FROM products WHERE updated_at >= %(since)s",
    update_1pct="UPDATE products SET price = price + 1 WHERE id % 100 = 0",
    load=_seed_sample,
)
if SAMPLE.listing_query != shop.LISTING_QUERY:
    raise RuntimeError("the sample catalog's columns no longer match examples/seed.py")


# The wide catalog: rows of ~1 KB of JSON, generated in SQL from MariaDB's sequence
# engine (seq_1_to_N) so that 1M products load in seconds and every value is a
# deterministic function of the id. Awkward text (quotes, backslashes, newlines, tabs,
# non-Latin scripts, emoji), NULL in every nullable column, whole-second DATETIME(3)
# values (no fraction in JSON) next to fractional ones, empty VARBINARY.
_WIDE_SCHEMA = """
DROP TABLE IF EXISTS review_stats, promotions, items, brands;
CREATE TABLE brands (
    id      INT          NOT NULL PRIMARY KEY,
    name    VARCHAR(100) NOT NULL,
    country CHAR(2)      NOT NULL,
    founded DATE         NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE items (
    id             BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    sku            VARCHAR(32)     NOT NULL,
    title          VARCHAR(255)    NOT NULL,
    summary        VARCHAR(500)    NULL,
    body           TEXT            NOT NULL,
    price          DECIMAL(12,2)   NOT NULL,
    list_price     DECIMAL(12,2)   NULL,
    cost           DECIMAL(14,4)   NOT NULL,
    tax_rate       DECIMAL(5,4)    NOT NULL,
    weight_kg      DECIMAL(8,3)    NULL,
    stock          INT             NOT NULL,
    sold_24h       INT             NOT NULL,
    created_at     DATETIME(3)     NOT NULL,
    updated_at     DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                   ON UPDATE CURRENT_TIMESTAMP(3),
    available_from DATETIME(3)     NULL,
    checksum       VARBINARY(32)   NOT NULL,
    thumbnail      VARBINARY(255)  NULL,
    brand_id       INT             NULL,
    KEY (updated_at),
    KEY (sold_24h, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE promotions (
    item_id  BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    label    VARCHAR(100)    NOT NULL,
    discount DECIMAL(5,2)    NOT NULL,
    ends_at  DATETIME(3)     NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE review_stats (
    item_id        BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    reviews        INT             NOT NULL,
    rating         DECIMAL(3,2)    NOT NULL,
    last_review_at DATETIME(3)     NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
INSERT INTO brands
SELECT seq, ELT(1 + seq % 8, 'Nordvik', 'Acme "Pro"', 'Tanaka 田中', 'Café Ølstue',
                'Brightline', 'Пётр & Co', 'Back\\\\slash Ltd', 'Kestrel 🦅'),
       ELT(1 + seq % 5, 'DE', 'JP', 'FR', 'US', 'NO'),
       IF(seq % 4 = 0, NULL, DATE'1950-01-01' + INTERVAL seq * 397 DAY)
FROM seq_1_to_40;
INSERT INTO items
SELECT seq,
       CONCAT('WID-', LPAD(seq, 8, '0')),
       CONCAT(ELT(1 + seq % 6, 'Oak Desk', 'Tea Set "Classic"', 'Lamp\\\\Shade 3/8"',
                  'Mug 🔥 500 ml', 'Rug 200\u00d7300 cm', '東京 Chair 椅子'), ' #', seq),
       CASE WHEN seq % 5 = 0 THEN NULL WHEN seq % 50 = 1 THEN ''
            ELSE CONCAT('Item ', seq, ': ', ELT(1 + seq % 3, 'everyday use',
                        'limited edition \u2013 while stocks last', 'ships in 24 h')) END,
       CONCAT(ELT(1 + seq % 4,
                  'Built to last and easy to clean. Designed in our studio and tested '
                  'for everyday use.',
                  'Handmade: each piece varies slightly in colour and grain.\\nDishwasher safe.',
                  'He said "it''s the best" \u2013 twice.\\tTabbed note: naïve café, Straße, 🙂.',
                  'Ünïcödé everywhere; Ελληνικά, русский, 日本語, العربية.\\r\\nLine two.'),
              ' ', REPEAT('Pairs well with the rest of the collection. ', 1 + seq % 6),
              'Care: wipe with a damp cloth; keep away from direct heat (max 60 °C). ',
              'Warranty: two years. SKU ', seq, '.'),
       (seq * 7919 % 100000) / 100,
       IF(seq % 3 = 0, NULL, (seq * 7919 % 100000) / 100 * 1.25),
       (seq * 104729 % 10000000) / 10000,
       ELT(1 + seq % 4, 0.0000, 0.0700, 0.1900, 0.0550),
       IF(seq % 9 = 0, NULL, (seq * 31 % 50000) / 1000),
       CAST(seq AS SIGNED) * 17 % 500 - 5,
       seq * 2654435761 % 1000,
       TIMESTAMP'2020-01-01 00:00:00' + INTERVAL seq * 7919 % 157680000 SECOND
           + INTERVAL IF(seq % 4 = 0, 0, seq % 1000) * 1000 MICROSECOND,
       TIMESTAMP'2025-01-01 00:00:00' + INTERVAL seq * 104729 % 31536000 SECOND
           + INTERVAL IF(seq % 3 = 0, 0, seq * 7 % 1000) * 1000 MICROSECOND,
       IF(seq % 6 = 0, NULL, TIMESTAMP'2026-01-01 00:00:00' + INTERVAL seq % 86400 SECOND
           + INTERVAL seq % 1000 * 1000 MICROSECOND),
       UNHEX(SHA2(seq, 256)),
       IF(seq % 5 = 1, NULL, LEFT(UNHEX(CONCAT(SHA2(seq, 512), SHA2(seq + 1, 512))), seq % 200)),
       IF(seq % 10 = 7, NULL, 1 + seq % 40)
FROM seq_1_to_{n};
INSERT INTO promotions
SELECT seq, ELT(1 + seq % 3, 'Summer sale', '2 for 1 \u2013 "bundle"', 'Black Friday 🖤'),
       (seq % 50) + 0.5, IF(seq % 15 = 0, NULL, TIMESTAMP'2026-12-01 00:00:00'
           + INTERVAL seq % 100000 SECOND + INTERVAL seq % 1000 * 1000 MICROSECOND)
FROM seq_1_to_{n} WHERE seq % 5 = 0;
INSERT INTO review_stats
SELECT seq, seq % 997, 1 + (seq % 400) / 100, TIMESTAMP'2026-06-01 00:00:00'
           + INTERVAL seq % 10000000 SECOND + INTERVAL seq % 7 * 1000 MICROSECOND
FROM seq_1_to_{n} WHERE seq % 5 IN (1, 2);
ANALYZE TABLE brands, items, promotions, review_stats;
"""


WIDE = Catalog(
    name="wide",
    shape=(
        "wide rows: 25 columns, ~1 KB of JSON: 7 DECIMALs, 5 DATETIME(3), TEXT of 150-450 "
        "bytes, 2 VARBINARY, 3 LEFT JOINs (brand, promotion on 20%, reviews on 40%)"
    ),
    table="items i",
    joins=(
        "LEFT JOIN brands b ON b.id = i.brand_id "
        "LEFT JOIN promotions pr ON pr.item_id = i.id "
        "LEFT JOIN review_stats r ON r.item_id = i.id"
    ),
    id_sql="i.id",
    columns=(
        Column("id", "i.id", "int"),
        Column("sku", "i.sku", "text"),
        Column("title", "i.title", "text"),
        Column("summary", "i.summary", "text"),
        Column("body", "i.body", "text"),
        Column("price", "i.price", "decimal"),
        Column("list_price", "i.list_price", "decimal"),
        Column("cost", "i.cost", "decimal"),
        Column("tax_rate", "i.tax_rate", "decimal"),
        Column("weight_kg", "i.weight_kg", "decimal"),
        Column("stock", "i.stock", "int"),
        Column("created_at", "i.created_at", "datetime"),
        Column("updated_at", "i.updated_at", "datetime"),
        Column("available_from", "i.available_from", "datetime"),
        Column("checksum", "i.checksum", "binary"),
        Column("thumbnail", "i.thumbnail", "binary"),
        Column("brand", "b.name", "text"),
        Column("brand_country", "b.country", "text"),
        Column("brand_founded", "b.founded", "date"),
        Column("promo", "pr.label", "text"),
        Column("promo_discount", "pr.discount", "decimal"),
        Column("promo_ends_at", "pr.ends_at", "datetime"),
        Column("reviews", "r.reviews", "int"),
        Column("rating", "r.rating", "decimal"),
        Column("last_review_at", "r.last_review_at", "datetime"),
    ),
    hot_query="SELECT id FROM items ORDER BY sold_24h DESC, id LIMIT %(limit)s",
    changed_query="SELECT id FROM items WHERE updated_at >= %(since)s",
    update_1pct="UPDATE items SET price = price + 1 WHERE id % 100 = 0",
    load=_seed_sql(_WIDE_SCHEMA),
)


# The narrow catalog: 5 columns, ~80 bytes of JSON per listing, the worst case for
# per-row overhead (every fixed cost of a row weighs the most against the bytes it
# carries). Seeded from the sequence engine like the wide one; a few names hold a quote,
# a backslash or a non-Latin script so the text path is still exercised.
_NARROW_SCHEMA = """
DROP TABLE IF EXISTS skus;
CREATE TABLE skus (
    id         BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    sku        VARCHAR(16)     NOT NULL,
    name       VARCHAR(64)     NOT NULL,
    price      DECIMAL(9,2)    NOT NULL,
    stock      INT             NOT NULL,
    sold_24h   INT             NOT NULL,
    updated_at DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                               ON UPDATE CURRENT_TIMESTAMP(3),
    KEY (updated_at),
    KEY (sold_24h, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
INSERT INTO skus (id, sku, name, price, stock, sold_24h, updated_at)
SELECT seq,
       CONCAT('NAR-', LPAD(seq, 8, '0')),
       CONCAT(ELT(1 + seq % 8, 'Mug', 'Pen', 'Cap', 'Tea "Gold"', 'Bag',
                  'Café Cup', 'Box\\\\Lid', '東京 Fan'), ' ', seq),
       (seq * 7919 % 100000) / 100,
       CAST(seq AS SIGNED) * 17 % 500 - 5,
       seq * 2654435761 % 1000,
       TIMESTAMP'2025-01-01 00:00:00' + INTERVAL seq * 104729 % 31536000 SECOND
FROM seq_1_to_{n};
ANALYZE TABLE skus;
"""


NARROW = Catalog(
    name="narrow",
    shape="narrow rows: 5 columns, ~80 bytes of JSON (BIGINT, 2 VARCHAR, DECIMAL, INT), no JOIN",
    table="skus s",
    joins="",
    id_sql="s.id",
    columns=(
        Column("id", "s.id", "int"),
        Column("sku", "s.sku", "text"),
        Column("name", "s.name", "text"),
        Column("price", "s.price", "decimal"),
        Column("stock", "s.stock", "int"),
    ),
    hot_query="SELECT id FROM skus ORDER BY sold_24h DESC, id LIMIT %(limit)s",
    changed_query="SELECT id FROM skus WHERE updated_at >= %(since)s",
    update_1pct="UPDATE skus SET price = price + 1 WHERE id % 100 = 0",
    load=_seed_sql(_NARROW_SCHEMA),
)

CATALOGS = {c.name: c for c in (SAMPLE, WIDE, NARROW)}
