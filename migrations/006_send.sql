-- Send and track (POST /v1/messages, ledger send, reconciliation, resend).

-- max() of jsonb, which PostgreSQL does not define: the status fold keeps a message's tags
-- with it (projections.fold.TAGS). Strict, so nulls are skipped; greatest() is jsonb's own
-- ordering, the one the fold's merge of two rows uses, so a batch and its parts agree.
CREATE FUNCTION ledger_jsonb_larger(a jsonb, b jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS 'SELECT greatest(a, b)';
CREATE AGGREGATE ledger_max(jsonb) (
    SFUNC = ledger_jsonb_larger, STYPE = jsonb, COMBINEFUNC = ledger_jsonb_larger,
    PARALLEL = SAFE
);

-- message_status gains what a send knows: the parent of a multi-part message's part, the
-- send request, the resend links both ways, and the request's tags (name -> value).
ALTER TABLE message_status
    ADD COLUMN parent_message_uuid text COLLATE "C",
    ADD COLUMN send_request_id text COLLATE "C",
    ADD COLUMN resent_from text COLLATE "C",
    ADD COLUMN resent_as text COLLATE "C",
    ADD COLUMN tags jsonb;
-- A parent's parts (few rows carry one); tag filters (only sent messages carry tags).
CREATE INDEX message_status_by_parent ON message_status (parent_message_uuid)
    WHERE parent_message_uuid IS NOT NULL;
CREATE INDEX message_status_by_tags ON message_status USING gin (tags jsonb_path_ops)
    WHERE tags IS NOT NULL;

-- A send request's outcome, by its id: the messages Plivo accepted and the numbers it
-- refused (idempotent retries answer from these; the outcome job looks for them).
CREATE INDEX events_by_send_request ON events ((payload ->> 'SendRequest'))
    WHERE event_type IN ('message.submitted', 'message.rejected');
-- Send requests and their unknown outcomes, by time (the outcome job, /ready, /metrics).
CREATE INDEX events_send_requests ON events (event_type, recorded_at)
    WHERE event_type IN ('message.send_requested', 'message.send_outcome_unknown');
