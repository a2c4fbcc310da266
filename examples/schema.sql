-- Sample shop used by the tests, the demo and the benchmarks.
-- Safe to reload: it drops and recreates its own four tables only.
-- Works on MariaDB >= 10.6 and MySQL >= 8.0.

DROP TABLE IF EXISTS product_images;
DROP TABLE IF EXISTS order_lines;
DROP TABLE IF EXISTS products;
DROP TABLE IF EXISTS categories;

CREATE TABLE categories (
    id   INT          NOT NULL PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    slug VARCHAR(100) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE products (
    id          BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    sku         VARCHAR(32)     NOT NULL,
    name        VARCHAR(255)    NOT NULL,
    description TEXT            NULL,
    price       DECIMAL(10,2)   NOT NULL,
    weight_kg   DOUBLE          NULL,
    category_id INT             NOT NULL,
    released_on DATE            NULL,
    updated_at  DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
                                ON UPDATE CURRENT_TIMESTAMP(6),
    thumbnail   VARBINARY(64)   NULL,
    KEY (updated_at),
    KEY (category_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- The covering index serves the "hottest products of the last day" query
-- as an index range scan.
CREATE TABLE order_lines (
    id         BIGINT          NOT NULL AUTO_INCREMENT PRIMARY KEY,
    product_id BIGINT UNSIGNED NOT NULL,
    qty        INT             NOT NULL,
    ordered_at DATETIME        NOT NULL,
    KEY (ordered_at, product_id, qty)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Child rows a listing carries as a JSON array (see seed.LISTING_QUERY_WITH_IMAGES).
CREATE TABLE product_images (
    product_id BIGINT UNSIGNED NOT NULL,
    position   INT             NOT NULL,
    url        VARCHAR(255)    NOT NULL,
    alt        VARCHAR(255)    NULL,
    width      INT             NOT NULL,
    PRIMARY KEY (product_id, position)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
