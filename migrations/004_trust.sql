-- Trust: every nonce pinned to the one body it signed, sealed blocks over the ledger, and a
-- service role that may add to history but never change it.

-- Tables whose rows are history: nothing may change or remove them, whoever asks.
CREATE FUNCTION refuse_changes_to_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the % table is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'History is only ever appended to; rebuild views with "ledger replay".';
END;
$$;

-- A nonce signs exactly one body. V2 signatures do not cover the body at all, and V3 signs
-- key1value1key2value2… with no separators, so moving the key/value boundaries gives other
-- bodies with the same signature. Every accepted nonce is remembered (per scheme family:
-- V3 and V2 nonces are separate) with a digest of the canonical body it came with; the
-- append's ON CONFLICT DO NOTHING honours this key, so the rule holds across concurrent
-- transactions and processes.
CREATE TABLE callback_nonces (
    scheme       text NOT NULL CHECK (scheme IN ('v3', 'v2')),
    nonce        text NOT NULL,
    body_digest  bytea NOT NULL,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scheme, nonce)
);

INSERT INTO callback_nonces (scheme, nonce, body_digest, first_seen)
SELECT 'v2', nonce, body_digest, first_seen FROM v2_nonces;
DROP TABLE v2_nonces;

-- The events table's own triggers move to the shared function.
DROP TRIGGER events_no_update_or_delete ON events;
DROP TRIGGER events_no_truncate ON events;
DROP FUNCTION events_are_immutable();
CREATE TRIGGER events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_changes_to_history();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_changes_to_history();

CREATE TRIGGER callback_nonces_no_update_or_delete
    BEFORE UPDATE OR DELETE ON callback_nonces
    FOR EACH ROW EXECUTE FUNCTION refuse_changes_to_history();
CREATE TRIGGER callback_nonces_no_truncate
    BEFORE TRUNCATE ON callback_nonces
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_changes_to_history();

-- Sealed blocks: a Merkle tree (RFC 6962 hashing) over each block's events in fence order,
-- each root chained to the previous block's. A block covers the events after the previous
-- block's last (transaction id, position) up to and including its own. The leaf hashes and
-- positions are kept so that a verifier can name the first bad event, not just the block,
-- and so that inclusion proofs need no re-read of the events. See the README's "Proof format".
CREATE TABLE seals (
    block                bigint PRIMARY KEY CHECK (block > 0),
    event_count          integer NOT NULL CHECK (event_count > 0),
    total_events         bigint NOT NULL,
    last_transaction_id  xid8 NOT NULL,
    last_position        bigint NOT NULL,
    positions            bigint[] NOT NULL,
    leaves               bytea NOT NULL,
    root                 bytea NOT NULL,
    chain                bytea NOT NULL,
    sealed_at            timestamptz NOT NULL DEFAULT now()
);

-- Finding the block that holds an event: the first block whose end is at or after it.
CREATE UNIQUE INDEX seals_by_end ON seals (last_transaction_id, last_position);

CREATE TRIGGER seals_no_update_or_delete
    BEFORE UPDATE OR DELETE ON seals
    FOR EACH ROW EXECUTE FUNCTION refuse_changes_to_history();
CREATE TRIGGER seals_no_truncate
    BEFORE TRUNCATE ON seals
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_changes_to_history();

-- Events stored before this migration carry no signature material, so 'ledger verify' cannot
-- re-check their signatures. The last of them, in fence order, is kept here: any later event
-- must carry its proof, and a forged event claiming a place this early would fall inside a
-- sealed range, where the seals catch it.
CREATE TABLE legacy_events_end (
    transaction_id  xid8 NOT NULL,
    position        bigint NOT NULL
);
INSERT INTO legacy_events_end (transaction_id, position)
SELECT coalesce(last.transaction_id, '0'::xid8), coalesce(last.position, 0)
FROM (SELECT) AS one
LEFT JOIN LATERAL (
    SELECT transaction_id, position FROM events
    ORDER BY transaction_id DESC, position DESC LIMIT 1
) AS last ON true;

-- Least privilege. The service (API workers, projectors, sealer, scheduled jobs) runs as a
-- member of ledger_service: it may read and append history but not update, delete,
-- truncate or alter it, nor disable its triggers (only the owner, who runs migrations,
-- can). It owns the disposable read views, because replay drops and recreates them.
-- Creating a role needs CREATEROLE: without it the migration still applies, warns, and the
-- service keeps the migrating role's rights (the README's "Least privilege" says how to
-- set the roles up by hand).
DO $$
BEGIN
    -- Roles are cluster-wide: another database on this server may have created it, or an
    -- administrator may have (then the owner needs no CREATEROLE).
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_service') THEN
        BEGIN
            CREATE ROLE ledger_service NOLOGIN;
        EXCEPTION WHEN duplicate_object THEN
            NULL;  -- created meanwhile by a migration of another database
        END;
    END IF;
    GRANT SELECT, INSERT ON events, callback_nonces, seals TO ledger_service;
    GRANT SELECT ON schema_migrations, legacy_events_end TO ledger_service;
    GRANT SELECT, INSERT, UPDATE, DELETE
        ON projection_checkpoints, dead_letters, scheduled_job_runs TO ledger_service;
    -- Replay creates the new views' tables here. Before PostgreSQL 15 every role may already
    -- (and only the schema's owner, a superuser there, could grant it).
    IF NOT has_schema_privilege('ledger_service', 'public', 'CREATE') THEN
        GRANT CREATE ON SCHEMA public TO ledger_service;
    END IF;
    ALTER TABLE message_status OWNER TO ledger_service;
    ALTER TABLE daily_delivery_facts OWNER TO ledger_service;
    ALTER TABLE daily_delivery_counts OWNER TO ledger_service;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'could not set up the ledger_service role (%): the service runs with the privileges of the role it connects as', SQLERRM;
END;
$$;
