#!/bin/bash
# Runs once, when the postgres container initialises an empty data directory
# (deploy/compose.yaml mounts it into /docker-entrypoint-initdb.d/).
# Two roles: `ledger` owns the database and applies the migrations (the
# `migrate` service); `consent_ledger_service` is what the worker and the API
# connect as: it owns nothing, and migration 002 gives it only SELECT and INSERT
# on ledger_entries, so it can neither change the ledger nor give itself the
# right to (see deploy/README.md, section 2). `consent_ledger_analyst` is the
# group role of analysts' logins: migration 020 grants it the views of the
# schema `analytics` and nothing else.
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     --set=ledger_password="$LEDGER_DB_PASSWORD" <<'SQL'
CREATE ROLE ledger LOGIN PASSWORD :'ledger_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE DATABASE ledger OWNER ledger;
REVOKE ALL ON DATABASE ledger FROM PUBLIC;
CREATE ROLE consent_ledger_service LOGIN PASSWORD :'ledger_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
GRANT CONNECT ON DATABASE ledger TO consent_ledger_service;
CREATE ROLE consent_ledger_analyst NOLOGIN;
GRANT CONNECT ON DATABASE ledger TO consent_ledger_analyst;
SQL
