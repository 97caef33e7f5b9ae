-- A broker that keeps nothing (the embedded Tansu of `consent-ledger dev`)
-- starts every topic again at offset 0 while the database keeps the ledger.
-- Each such restart opens a new broker epoch: the positions go back to 0 and
-- each partition's log records the leaf index where the epoch's offsets begin,
-- so `verify` knows offsets restart there and nowhere else.
CREATE TABLE broker_epochs (
    kafka_partition  integer     NOT NULL,
    first_leaf_index bigint      NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_partition, first_leaf_index)
);
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'consent_ledger_service') THEN
        GRANT SELECT, INSERT ON broker_epochs TO consent_ledger_service;
    END IF;
END $$;
