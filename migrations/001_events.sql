-- The ledger: every validated callback, once, forever.
CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    message_uuid    uuid NOT NULL,
    event_type      text NOT NULL,
    status          text,
    occurred_at     timestamptz,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    dedup_key       bytea NOT NULL,
    payload         jsonb NOT NULL,
    meta            jsonb NOT NULL,
    CONSTRAINT events_dedup_key_unique UNIQUE (dedup_key)
);

-- One message's lifecycle, in ledger order (audit lookups, projector folds).
CREATE INDEX events_stream ON events (message_uuid, position);
-- Tailing readers walk the ledger in commit-safe order behind the transaction-id fence.
CREATE INDEX events_tail ON events (transaction_id, position);

CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the events table is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Append a new event instead; rebuild views with "ledger replay".';
END;
$$;

CREATE TRIGGER events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();

-- V2 signatures do not cover the body: remember each accepted nonce with a digest of its
-- body, so that a captured signature replayed with another body can be refused.
CREATE TABLE v2_nonces (
    nonce        text PRIMARY KEY,
    body_digest  bytea NOT NULL,
    first_seen   timestamptz NOT NULL DEFAULT now()
);
