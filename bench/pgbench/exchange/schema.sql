-- A table shaped like exchange_orders (same columns, keys, foreign keys and indexes), so that pgbench
-- pays what the gateway's own insert pays, minus the application. bench_outbox comes from ../outbox.sql.
DROP TABLE IF EXISTS bench_orders;

CREATE TABLE bench_orders (
    id BIGSERIAL PRIMARY KEY,
    merchant_id BIGINT NOT NULL REFERENCES merchants (id),
    direction_id BIGINT NOT NULL REFERENCES directions (id),
    payment_method VARCHAR(32) NOT NULL,
    status VARCHAR(16) NOT NULL,
    version INTEGER NOT NULL,
    wallet VARCHAR(100) NOT NULL,
    currency VARCHAR(8) NOT NULL,
    from_amount BIGINT NOT NULL,
    amount_payable BIGINT NOT NULL,
    exchange_rate VARCHAR(40) NOT NULL,
    rate_source VARCHAR(100) NOT NULL,
    commission_percent VARCHAR(16) NOT NULL,
    amount_receivable BIGINT NOT NULL,
    requisite_id BIGINT REFERENCES requisites (id),
    access_token VARCHAR(64) NOT NULL UNIQUE,
    paid_amount BIGINT,
    txid VARCHAR(64),
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    paid_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ
);
CREATE INDEX ix_bench_orders_merchant_id_id ON bench_orders (merchant_id, id);
CREATE INDEX ix_bench_orders_status_payment_method ON bench_orders (status, payment_method);
CREATE UNIQUE INDEX uq_bench_orders_awaiting_requisite_amount
    ON bench_orders (requisite_id, amount_payable) WHERE status = 'awaiting';
