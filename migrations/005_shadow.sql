-- Replay builds a view's new tables in a schema of its own, then moves them into place with
-- ALTER TABLE … SET SCHEMA, so that their indexes and constraints keep the names they were
-- created with. Nothing else lives here; replay drops what an interrupted run left.
CREATE SCHEMA ledger_shadow;

-- The service's role (migration 004) creates and moves the tables. Without that role the
-- service runs as the migrating role, which owns the schema.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_service') THEN
        GRANT USAGE, CREATE ON SCHEMA ledger_shadow TO ledger_service;
    END IF;
END;
$$;
