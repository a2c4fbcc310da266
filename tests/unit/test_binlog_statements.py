"""binlog.statements: which statements in the binlog change a watched table."""

from __future__ import annotations

import pytest

from cachewarm.binlog.statements import classify

TABLES = ("products", "product_images")


@pytest.mark.parametrize(
    ("sql", "default", "kind", "table"),
    [
        ("TRUNCATE products", "shop", "ddl", "shop.products"),
        ("/* nightly */ truncate table `shop`.`Products`", "", "ddl", "shop.Products"),
        ("-- swap\nRENAME TABLE x TO y, products TO products_old", "shop", "ddl", "shop.products"),
        ("RENAME TABLE products_new TO products", "shop", "ddl", "shop.products"),
        ("DROP TABLE IF EXISTS a, shop.product_images", "other", "ddl", "shop.product_images"),
        ("ALTER TABLE products MODIFY price DECIMAL(10,0)", "shop", "ddl", "shop.products"),
        ("/*!40000 ALTER TABLE `products` DISABLE KEYS */", "shop", "ddl", "shop.products"),
        ("CREATE OR REPLACE TABLE products (id INT)", "shop", "ddl", "shop.products"),
        ("DROP DATABASE IF EXISTS shop", "", "ddl", "shop"),
        ("UPDATE products SET name = 'x'", "shop", "dml", "shop.products"),
        ("# why\nDELETE FROM `shop`.products WHERE id = 1", "", "dml", "shop.products"),
        ("ALTER TABLE other.products ADD x INT", "shop", "other", ""),
        ("TRUNCATE products", "other", "other", ""),
        ("INSERT INTO log VALUES ('products')", "shop", "other", ""),
        ("RENAME TABLE a TO b", "shop", "other", ""),
        ("COMMIT", "shop", "other", ""),
        ("XA COMMIT X'7831',X'',1", "", "other", ""),
    ],
)
def test_statements_name_the_watched_tables_they_change(
    sql: str, default: str, kind: str, table: str
) -> None:
    found = classify(sql, default, "shop", TABLES)
    assert (found.kind, found.table) == (kind, table)
