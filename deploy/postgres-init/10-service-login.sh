#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory: creates the
# login the service connects as. 'ledger migrate' (run as the owner) then makes it a member
# of ledger_service, which may read and append history but never change it.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=password="$LEDGER_SERVICE_PASSWORD" <<'SQL'
CREATE ROLE ledger_app LOGIN PASSWORD :'password';
SQL
