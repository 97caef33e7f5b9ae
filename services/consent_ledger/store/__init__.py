"""Every SQL statement of the ledger: migrations, batch read and write, API and audit reads."""
