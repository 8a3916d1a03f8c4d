-- A sample shop for the compose setup, and the connector's read-only role.
CREATE TABLE customers (
    customer_id bigint PRIMARY KEY,
    first_name  text,
    last_name   text,
    mobile      text,
    city        text,
    status      text NOT NULL DEFAULT 'active',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_updated_at ON customers (updated_at);

CREATE TABLE orders (
    order_id    bigint PRIMARY KEY,
    customer_id bigint NOT NULL,
    amount      numeric(10, 2),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_created_at ON orders (created_at);

CREATE TABLE unsubscribes (
    id              bigserial PRIMARY KEY,
    customer_id     bigint NOT NULL,
    unsubscribed_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO customers (customer_id, first_name, last_name, mobile, city)
SELECT i, 'Given' || i, 'Family' || i, '+4670' || lpad((1000000 + i)::text, 7, '0'),
       (ARRAY['Stockholm', 'Göteborg', 'Malmö'])[1 + i % 3]
FROM generate_series(1, 1000) AS i;
INSERT INTO orders (order_id, customer_id, amount)
SELECT i, 1 + i % 1000, 100 + i % 400 FROM generate_series(1, 300) AS i;
INSERT INTO unsubscribes (customer_id) VALUES (17), (42);

CREATE ROLE connector LOGIN PASSWORD 'connector-demo-only';
GRANT pg_read_all_stats TO connector;
GRANT USAGE ON SCHEMA public TO connector;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO connector;
