-- One point select by primary key (what POST /api/v2/order/check must at least read).
-- Variables from -D: max_id.
\set id random(1, :max_id)
SELECT * FROM bench_orders WHERE id = :id;
