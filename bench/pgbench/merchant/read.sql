-- One point select by primary key (what get_status2.php must at least read).
-- Variables from -D: max_id.
\set id random(1, :max_id)
SELECT * FROM bench_payments WHERE id = :id;
