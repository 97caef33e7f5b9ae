-- A signed checkpoint is issued once and kept; a partition's Merkle log only
-- grows. The service inserts checkpoints and inserts or advances logs, and
-- never needs more: what 002 granted beyond that is taken back, so the
-- service role cannot withdraw a checkpoint an auditor may already hold, nor
-- drop a partition's log.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'consent_ledger_service') THEN
        REVOKE UPDATE, DELETE ON checkpoints FROM consent_ledger_service;
        REVOKE DELETE ON merkle_logs FROM consent_ledger_service;
    END IF;
END $$;
