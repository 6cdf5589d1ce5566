-- One order and its outbox row in one transaction (what POST /api/v2/order/create must at least write).
-- Variables from -D: merchant_id, direction_id, req_lo, req_hi.
\set amount random(30000, 15000000000)
\set req random(:req_lo, :req_hi)
BEGIN;
INSERT INTO bench_orders (
    merchant_id, direction_id, payment_method, status, version, wallet, currency, from_amount,
    amount_payable, exchange_rate, rate_source, commission_percent, amount_receivable, requisite_id,
    access_token, expires_at, created_at, updated_at
) VALUES (
    :merchant_id, :direction_id, 'card', 'awaiting', 1, 'bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq', 'RUB',
    :amount, :amount, '3233561.44', 'fixed', '17', :amount::bigint / 38960, :req,
    md5(random()::text || clock_timestamp()::text), now() + interval '30 minutes', now(), now()
) ON CONFLICT DO NOTHING;
INSERT INTO bench_outbox (kind, merchant_id, aggregate, payload, status, attempts, due_at, created_at)
VALUES (
    'exchange.order_expire', :merchant_id, 'order:' || currval('bench_orders_id_seq'),
    '{"order_id":' || currval('bench_orders_id_seq') || '}', 'pending', 0, now() + interval '30 minutes', now()
);
END;
