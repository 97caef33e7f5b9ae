-- Production runs the migrations as an owner role and the worker and API as
-- `consent_ledger_service`, which must not own ledger_entries (an owner can
-- grant itself UPDATE again, disable the trigger or drop the table). When that
-- role exists, it gets what the service needs and, on the ledger, only SELECT
-- and INSERT. Every later migration that adds a table grants it here too.
-- Without the role (a single-role setup such as `consent-ledger dev`) this does
-- nothing: the privileges revoked in 001 and the trigger still apply.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'consent_ledger_service') THEN
        GRANT SELECT, INSERT ON ledger_entries TO consent_ledger_service;
        GRANT SELECT, INSERT, UPDATE, DELETE ON
            merkle_logs, subject_keys, consent_changes, disclosures, erasures, current_consents,
            violations, rejected_events, outbox, consumer_positions, checkpoints
            TO consent_ledger_service;
        GRANT SELECT ON schema_migrations TO consent_ledger_service;
        GRANT USAGE, SELECT ON ledger_seq, violations_id_seq, rejected_events_id_seq,
            outbox_id_seq, checkpoints_id_seq TO consent_ledger_service;
    END IF;
END $$;
