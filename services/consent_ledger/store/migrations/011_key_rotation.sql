-- Key rotation (CONTRACT §7).
--
-- Master keys: the ledger knows them by id only (the key itself never enters
-- the database). A subject key's wrapped form names the master key that
-- wrapped it (0x02 || 8-byte id || ...; 0x01 ... from before rotation names
-- none). `consent-ledger keys rotate-master` re-wraps every subject key under
-- the newest master key, then retires the others: from then on no subject key
-- may be stored wrapped by a retired key (the trigger below), so a worker
-- still holding only an old key file waits instead of writing keys nobody
-- could unwrap once the old key is gone.
CREATE TABLE master_keys (
    key_id     bytea       PRIMARY KEY CHECK (length(key_id) = 8),
    first_seen timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);

CREATE FUNCTION subject_keys_wrapped_by_live_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM master_keys
        WHERE retired_at IS NOT NULL
          AND (get_byte(NEW.wrapped_key, 0) <> 2
               OR key_id = substring(NEW.wrapped_key FROM 2 FOR 8))
    ) THEN
        RAISE EXCEPTION 'the subject key of % is wrapped by a retired master key', NEW.subject
            USING ERRCODE = 'LK001',
                  HINT = 'give this process the newest LEDGER_MASTER_KEY_FILE';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER subject_keys_wrapped_by_live_key
    BEFORE INSERT OR UPDATE ON subject_keys
    FOR EACH ROW EXECUTE FUNCTION subject_keys_wrapped_by_live_key();

-- Signing keys: every public key that signs checkpoints, registered by the
-- worker that loads it (and by `keys rotate-signing`). The period each signed
-- is read from the checkpoints, which carry their key id.
CREATE TABLE signing_keys (
    key_id         text        PRIMARY KEY,
    public_key_pem text        NOT NULL,
    registered_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX checkpoints_by_key ON checkpoints ((document ->> 'key_id'), issued_at);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'consent_ledger_service') THEN
        GRANT SELECT, INSERT, UPDATE ON master_keys TO consent_ledger_service;
        GRANT SELECT, INSERT ON signing_keys TO consent_ledger_service;
    END IF;
END $$;
