-- Where each projector has got to in the ledger. The runner updates its row in the same
-- transaction as the view, so a view and its checkpoint can never disagree.
-- (transaction_id, position) is a place in fence order (see ledger.store.read_after).
CREATE TABLE projection_checkpoints (
    name            text PRIMARY KEY,
    transaction_id  xid8 NOT NULL DEFAULT '0',
    position        bigint NOT NULL DEFAULT 0,
    -- The projector version the view was built with: another version means a rebuild.
    version         integer NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Events a projector could not apply. The checkpoint moves past them so the ledger is never
-- blocked; replay retries them and marks them resolved when the rebuilt view includes them.
-- No foreign key to events: it would take a row lock on the (immutable) event.
CREATE TABLE dead_letters (
    projector    text NOT NULL,
    position     bigint NOT NULL,
    error        text NOT NULL,
    failed_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz,
    PRIMARY KEY (projector, position)
);

-- Lag reports and /ready count the unresolved ones per projector.
CREATE INDEX dead_letters_unresolved ON dead_letters (projector) WHERE resolved_at IS NULL;

-- When each scheduled job last ran, in any process: a job runs at most once per period
-- across every process that schedules it (APScheduler 3 has no coordination of its own).
CREATE TABLE scheduled_job_runs (
    job          text PRIMARY KEY,
    last_run_at  timestamptz NOT NULL
);
