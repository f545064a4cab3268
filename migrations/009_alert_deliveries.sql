-- The alert webhook's outbox: each delivery the alert run decided on, until the receiver
-- takes it. The run writes them in the transaction that replaces the alerts, and the
-- deliveries job posts what is due, so that a receiver that is down, or a process killed
-- while posting, delays a delivery instead of losing it. Taken deliveries are deleted.
CREATE TABLE alert_deliveries (
    -- The Standard Webhooks message id: the same on every attempt, so receivers can drop
    -- repeats (a delivery is at least once).
    webhook_id       text COLLATE "C" PRIMARY KEY,
    -- The JSON posted, byte for byte (each attempt signs it afresh with its timestamp).
    body             bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    -- A claimed delivery is leased until this time, a failed one waits until it.
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_service') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON alert_deliveries TO ledger_service;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'could not grant alert_deliveries to ledger_service (%): the service uses it with the privileges of the role it connects as', SQLERRM;
END;
$$;
