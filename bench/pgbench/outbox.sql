-- A table shaped like outbox (same columns, keys and indexes), for the pgbench write scripts: every
-- business write of the gateway enqueues a job or a callback in the same transaction.
DROP TABLE IF EXISTS bench_outbox;

CREATE TABLE bench_outbox (
    id BIGSERIAL PRIMARY KEY,
    kind VARCHAR(40) NOT NULL,
    merchant_id BIGINT,
    aggregate VARCHAR(60) NOT NULL,
    payload TEXT NOT NULL,
    target_url VARCHAR(2000),
    status VARCHAR(16) NOT NULL,
    attempts INTEGER NOT NULL,
    due_at TIMESTAMPTZ NOT NULL,
    claimed_by VARCHAR(100),
    claimed_until TIMESTAMPTZ,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ
);
CREATE INDEX ix_bench_outbox_merchant_id ON bench_outbox (merchant_id);
CREATE INDEX ix_bench_outbox_pending_due ON bench_outbox (due_at) WHERE status = 'pending';
