-- GET /v1/policy counts the violations open now per clause (store/api_reads.py,
-- OPEN_VIOLATIONS_BY_CLAUSE). Only open violations are in this index, so the
-- count reads it alone: over a million violations, two thirds open, p50 319 ms
-- without it and 114 ms with it (bench/bench_policy.py, bench/RESULTS.md).
CREATE INDEX IF NOT EXISTS violations_open_by_clause ON violations (clause) WHERE status = 'open';
