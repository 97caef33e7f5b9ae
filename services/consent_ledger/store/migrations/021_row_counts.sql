-- Counts that /v1/stats, /metrics and GET /v1/policy read without counting:
-- rows of ledger_entries by type, of rejected_events by reason and of
-- violations by rule, severity, clause and status, kept as deltas in
-- `row_counts` and summed at read.
--
-- Triggers keep them, per statement, from the statement's transition tables:
-- whichever statement changes those tables (the worker's batch statement and
-- its COPY, re-judging after a policy publication, the policy's own ledger
-- entry, erasure, rebuild --swap, an operator's SQL) adds its delta rows in
-- its own transaction, so the counts commit and roll back with the rows they
-- count and cannot drift from them. A delta is only ever inserted, never
-- updated: concurrent batches (two workers) take no lock on a shared counter
-- row. The worker folds the deltas into one row per key now and then
-- (store/row_counts.py, COMPACT), which keeps the sum at read a few hundred
-- rows at most.
--
-- key: ledger_entries {type}; rejected_events {reason};
--      violations {rule, severity, clause, status}.

CREATE TABLE row_counts (
    counted text   NOT NULL,  -- the table whose rows are counted
    key     text[] NOT NULL,
    n       bigint NOT NULL
);

CREATE FUNCTION count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A column list is what each table is counted by; the transition tables are
    -- named new_rows / old_rows for every trigger below.
    IF TG_TABLE_NAME = 'ledger_entries' THEN
        INSERT INTO row_counts (counted, key, n)
        SELECT TG_TABLE_NAME, ARRAY[type], count(*) FROM new_rows GROUP BY type;
    ELSIF TG_TABLE_NAME = 'rejected_events' THEN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO row_counts (counted, key, n)
            SELECT TG_TABLE_NAME, ARRAY[reason], count(*) FROM new_rows GROUP BY reason;
        ELSIF TG_OP = 'DELETE' THEN
            INSERT INTO row_counts (counted, key, n)
            SELECT TG_TABLE_NAME, ARRAY[reason], -count(*) FROM old_rows GROUP BY reason;
        ELSE
            INSERT INTO row_counts (counted, key, n)
            SELECT TG_TABLE_NAME, ARRAY[reason], sum(d) FROM (
                SELECT reason, 1 AS d FROM new_rows UNION ALL SELECT reason, -1 FROM old_rows
            ) AS changed GROUP BY reason HAVING sum(d) <> 0;
        END IF;
    ELSIF TG_OP = 'INSERT' THEN  -- violations
        INSERT INTO row_counts (counted, key, n)
        SELECT TG_TABLE_NAME, ARRAY[rule, severity, clause, status], count(*)
        FROM new_rows GROUP BY rule, severity, clause, status;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO row_counts (counted, key, n)
        SELECT TG_TABLE_NAME, ARRAY[rule, severity, clause, status], -count(*)
        FROM old_rows GROUP BY rule, severity, clause, status;
    ELSE  -- an update: a status changed (or nothing counted: an erasure's scrub)
        INSERT INTO row_counts (counted, key, n)
        SELECT TG_TABLE_NAME, ARRAY[rule, severity, clause, status], sum(d) FROM (
            SELECT rule, severity, clause, status, 1 AS d FROM new_rows
            UNION ALL SELECT rule, severity, clause, status, -1 FROM old_rows
        ) AS changed GROUP BY rule, severity, clause, status HAVING sum(d) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION forget_row_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM row_counts WHERE counted = TG_TABLE_NAME;
    RETURN NULL;
END $$;

-- PostgreSQL allows transition tables only on a trigger with one event, hence
-- one trigger per event. ledger_entries only takes inserts (001).
CREATE TRIGGER ledger_entries_counted AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_rows();
CREATE TRIGGER rejected_events_counted_insert AFTER INSERT ON rejected_events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_rows();
CREATE TRIGGER rejected_events_counted_update AFTER UPDATE ON rejected_events
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_rows();
CREATE TRIGGER rejected_events_counted_delete AFTER DELETE ON rejected_events
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION count_rows();
CREATE TRIGGER rejected_events_counted_truncate AFTER TRUNCATE ON rejected_events
    FOR EACH STATEMENT EXECUTE FUNCTION forget_row_counts();
CREATE TRIGGER violations_counted_insert AFTER INSERT ON violations
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_rows();
CREATE TRIGGER violations_counted_update AFTER UPDATE ON violations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_rows();
CREATE TRIGGER violations_counted_delete AFTER DELETE ON violations
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION count_rows();
CREATE TRIGGER violations_counted_truncate AFTER TRUNCATE ON violations
    FOR EACH STATEMENT EXECUTE FUNCTION forget_row_counts();

-- The rows already there, counted once. The triggers above were created first,
-- in this transaction: they lock the tables against writes until it commits,
-- so no row is counted twice or missed.
INSERT INTO row_counts (counted, key, n)
SELECT 'ledger_entries', ARRAY[type], count(*) FROM ledger_entries GROUP BY type;
INSERT INTO row_counts (counted, key, n)
SELECT 'rejected_events', ARRAY[reason], count(*) FROM rejected_events GROUP BY reason;
INSERT INTO row_counts (counted, key, n)
SELECT 'violations', ARRAY[rule, severity, clause, status], count(*)
FROM violations GROUP BY rule, severity, clause, status;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'consent_ledger_service') THEN
        -- The triggers run as the role writing the counted rows; the worker folds.
        GRANT SELECT, INSERT, DELETE ON row_counts TO consent_ledger_service;
    END IF;
END $$;
