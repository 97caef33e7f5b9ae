#!/bin/bash
# Runs once, when the postgres container initialises an empty data directory
# (deploy/compose.yaml mounts it into /docker-entrypoint-initdb.d/).
# Creates the service's own role and database: the role owns the database, so
# the migrations it applies at start create tables it owns; it is no superuser,
# so the privileges revoked on ledger_entries hold for it.
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     --set=ledger_password="$LEDGER_DB_PASSWORD" <<'SQL'
CREATE ROLE ledger LOGIN PASSWORD :'ledger_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE DATABASE ledger OWNER ledger;
REVOKE ALL ON DATABASE ledger FROM PUBLIC;
SQL
