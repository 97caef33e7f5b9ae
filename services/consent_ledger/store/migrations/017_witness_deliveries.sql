-- Each signed checkpoint is POSTed to every witness URL (LEDGER_WITNESSES):
-- one row per (checkpoint, witness), written in the transaction that stores the
-- checkpoint, so a checkpoint signed just before a crash or a stop still
-- reaches every witness, from whichever worker runs next. A row is delivered
-- once the witness answered 2xx; until then it waits for `next_attempt_at`,
-- which backs off after each failure. Delivered rows stay, as the record of
-- what each witness was given.
CREATE TABLE witness_deliveries (
    checkpoint_id   bigint      NOT NULL REFERENCES checkpoints (id),
    witness_url     text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text,
    PRIMARY KEY (witness_url, checkpoint_id)
);
CREATE INDEX witness_deliveries_due ON witness_deliveries (witness_url, checkpoint_id)
    WHERE delivered_at IS NULL;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'consent_ledger_service') THEN
        GRANT SELECT, INSERT, UPDATE ON witness_deliveries TO consent_ledger_service;
    END IF;
END $$;
