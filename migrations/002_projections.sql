-- The read views folded from the ledger. Both can be dropped and rebuilt from the events at
-- any time ("ledger replay"); replay copies these tables with LIKE … INCLUDING ALL, so every
-- index a view needs is declared here, on the live table. Statuses, codes and numbers are
-- collated "C": they are compared (max(), filters, index order) but never sorted for people,
-- and "C" compares bytes, several times faster than a linguistic collation.

-- message_status: one row per message, its current status and lifecycle milestones.
CREATE TABLE message_status (
    message_uuid     uuid PRIMARY KEY,
    -- From the winning event (highest precedence, then Sequence, event time, position).
    status           text COLLATE "C",
    error_code       text COLLATE "C",
    -- Constant per message in practice; folded with max() so that arrival order cannot matter.
    from_number      text COLLATE "C",
    to_number        text COLLATE "C",
    message_type     text COLLATE "C",
    -- Charges only grow (the queued callback carries 0.00000), so the view keeps the maximum.
    units            integer,
    total_amount     numeric,
    -- Event time = coalesce(occurred_at, recorded_at).
    first_event_at   timestamptz NOT NULL,
    last_event_at    timestamptz NOT NULL,
    -- Each milestone is the earliest event time reported with that status.
    submitted_at     timestamptz,
    queued_at        timestamptz,
    sent_at          timestamptz,
    expired_at       timestamptz,
    delivered_at     timestamptz,
    undelivered_at   timestamptz,
    failed_at        timestamptz,
    rejected_at      timestamptz,
    read_at          timestamptz,
    event_count      integer NOT NULL,
    last_position    bigint NOT NULL,
    -- The winning event's sort key, kept so that a later batch can be merged without
    -- re-reading the message's earlier events. status_at doubles as "status since".
    status_rank      smallint NOT NULL,
    status_sequence  bigint,
    status_at        timestamptz NOT NULL,
    status_position  bigint NOT NULL
);

-- Keyset search, newest first, with and without the two selective filters. from_number has
-- no index of its own: senders are few, so the time index with a filter serves it, and every
-- index is paid for on each status change.
CREATE INDEX message_status_recent ON message_status (first_event_at, message_uuid);
CREATE INDEX message_status_by_status ON message_status (status, first_event_at, message_uuid);
CREATE INDEX message_status_by_recipient ON message_status (to_number, first_event_at, message_uuid);

-- daily_delivery_metrics, part 1: the metrics projector's own per-message fold (the same
-- fold as message_status, fewer columns) and where the message is counted in the cube below.
CREATE TABLE daily_delivery_facts (
    message_uuid     uuid PRIMARY KEY,
    status           text COLLATE "C",
    error_code       text COLLATE "C",
    status_rank      smallint NOT NULL,
    status_sequence  bigint,
    status_at        timestamptz NOT NULL,
    status_position  bigint NOT NULL,
    first_event_at   timestamptz NOT NULL,
    delivered_at     timestamptz,
    units            integer,
    total_amount     numeric,
    -- The day the message is counted under, stored rather than recomputed, so that removing
    -- the message from its old cell stays exact even if the configured zone changes.
    day              date NOT NULL
);

-- daily_delivery_metrics, part 2: every message counted once, in the cell of its first day,
-- current status, error code and time-to-deliver bucket. Rows reaching 0 messages are
-- deleted. The per-day rollup is a query (projections.queries.daily_metrics), not a SQL view:
-- a view would stay bound to the old table when replay swaps a rebuilt one in.
CREATE TABLE daily_delivery_counts (
    day             date NOT NULL,
    status          text COLLATE "C" NOT NULL,  -- '' when the message has no reported status
    error_code      text COLLATE "C" NOT NULL,  -- '' when there is no error code
    latency_bucket  smallint NOT NULL,  -- index into the bucket bounds; -1 when not delivered
    messages        bigint NOT NULL,
    units           bigint NOT NULL,
    total_amount    numeric NOT NULL,
    PRIMARY KEY (day, status, error_code, latency_bucket)
);
