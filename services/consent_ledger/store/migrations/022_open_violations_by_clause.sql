-- No partial index on the open violations' clause. An earlier 022 made one for
-- GET /v1/policy's count per clause (p50 13 ms against 29 ms at 200,000
-- violations), but it tripled PostgreSQL's CPU in the worker's batch writes
-- (bench_service --latency at 2,000 events/s: PostgreSQL 21 % -> 55 % of a core,
-- p99 63 -> 392 ms), a cost every event pays for a read an analyst makes now
-- and then. Databases that applied that version lose the index here.
DROP INDEX IF EXISTS violations_open_by_clause;
