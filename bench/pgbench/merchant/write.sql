-- One payment and its expiry job in one transaction (what init_payment.php must at least write).
-- Variables from -D: merchant_id.
\set amount random(100, 10000000)
BEGIN;
INSERT INTO bench_payments (
    merchant_id, order_id, open_order, status, version, amount, currency, description, testing, language,
    request_method, result_url, success_url_method, failure_url_method, state_url_method, two_step,
    captured, recurring_start, extra_params, access_token, require_3ds, refunded_amount, result_sent,
    expires_at, created_at, updated_at
) VALUES (
    :merchant_id, md5(random()::text || clock_timestamp()::text), true, 'new', 1, :amount, 'KZT',
    'Bench order', true, 'ru', 'POST', 'https://shop.example/result.php', 'GET', 'GET', 'GET', false,
    false, false, '[]', md5(random()::text || clock_timestamp()::text), false, 0, false,
    now() + interval '1 day', now(), now()
);
INSERT INTO bench_outbox (kind, merchant_id, aggregate, payload, status, attempts, due_at, created_at)
VALUES (
    'payment.expire', :merchant_id, 'payment:' || currval('bench_payments_id_seq'),
    '{"payment_id":' || currval('bench_payments_id_seq') || '}', 'pending', 0, now() + interval '1 day', now()
);
END;
