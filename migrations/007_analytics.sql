-- delivery_analytics (projections/analytics.py): the analytics projector's tables, as its
-- DDL builds them. Countries and carriers come from the mcc-mnc-p1 and phonenumbers
-- packages' data, which the projector's statements carry (no lookup table to fill).

-- Per message: the analytics projector's own fold, and the hour it is counted under.
CREATE TABLE analytics_facts (
    message_uuid     uuid PRIMARY KEY,
    status           text COLLATE "C",
    error_code       text COLLATE "C",
    status_rank      smallint NOT NULL,
    status_sequence  bigint,
    status_at        timestamptz NOT NULL,
    status_position  bigint NOT NULL,
    first_event_at   timestamptz NOT NULL,
    queued_at        timestamptz,
    sent_at          timestamptz,
    delivered_at     timestamptz,
    from_number      text COLLATE "C",
    to_number        text COLLATE "C",
    units            integer,
    total_amount     numeric,
    mcc              text COLLATE "C",
    mnc              text COLLATE "C",
    powerpack_uuid   text COLLATE "C",
    tag              text COLLATE "C",
    hour             timestamptz NOT NULL
);
-- The delivery-drop alert rule reads recent messages by first event time.
CREATE INDEX analytics_facts_recent ON analytics_facts (first_event_at);

-- The cube: every message once, in the cell of its hour (in LEDGER_TIMEZONE), country,
-- carrier, sender, tag, current status and error family ('' when unknown or none), with
-- both latency histograms, one column per bucket (queued -> sent, sent -> delivered).
CREATE TABLE analytics_counts (
    hour            timestamptz NOT NULL,
    country         text COLLATE "C" NOT NULL,
    carrier         text COLLATE "C" NOT NULL,
    sender          text COLLATE "C" NOT NULL,
    tag             text COLLATE "C" NOT NULL,
    status          text COLLATE "C" NOT NULL,
    error_family    text COLLATE "C" NOT NULL,
    messages        bigint NOT NULL,
    units           bigint NOT NULL,
    total_amount    numeric NOT NULL,
    queue_00        integer NOT NULL,
    queue_01        integer NOT NULL,
    queue_02        integer NOT NULL,
    queue_03        integer NOT NULL,
    queue_04        integer NOT NULL,
    queue_05        integer NOT NULL,
    queue_06        integer NOT NULL,
    queue_07        integer NOT NULL,
    queue_08        integer NOT NULL,
    queue_09        integer NOT NULL,
    queue_10        integer NOT NULL,
    queue_11        integer NOT NULL,
    queue_12        integer NOT NULL,
    queue_13        integer NOT NULL,
    queue_14        integer NOT NULL,
    queue_15        integer NOT NULL,
    queue_16        integer NOT NULL,
    queue_17        integer NOT NULL,
    carrier_00      integer NOT NULL,
    carrier_01      integer NOT NULL,
    carrier_02      integer NOT NULL,
    carrier_03      integer NOT NULL,
    carrier_04      integer NOT NULL,
    carrier_05      integer NOT NULL,
    carrier_06      integer NOT NULL,
    carrier_07      integer NOT NULL,
    carrier_08      integer NOT NULL,
    carrier_09      integer NOT NULL,
    carrier_10      integer NOT NULL,
    carrier_11      integer NOT NULL,
    carrier_12      integer NOT NULL,
    carrier_13      integer NOT NULL,
    carrier_14      integer NOT NULL,
    carrier_15      integer NOT NULL,
    carrier_16      integer NOT NULL,
    carrier_17      integer NOT NULL,
    PRIMARY KEY (hour, country, carrier, sender, tag, status, error_family)
);

-- Firing delivery-drop alerts, derived from analytics_facts by the alert job
-- (projections/alerts.py); '*' in carrier or sender means every one.
CREATE TABLE delivery_alerts (
    country        text COLLATE "C" NOT NULL,
    carrier        text COLLATE "C" NOT NULL,
    sender         text COLLATE "C" NOT NULL,
    window_start   timestamptz NOT NULL,
    window_end     timestamptz NOT NULL,
    messages       bigint NOT NULL,
    delivery_rate  float8 NOT NULL,
    baseline_rate  float8 NOT NULL,
    drop_points    float8 NOT NULL,
    since          timestamptz NOT NULL,
    PRIMARY KEY (country, carrier, sender)
);

-- The service's role owns the view's tables, as migration 004 arranges for the others.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_service') THEN
        ALTER TABLE analytics_facts OWNER TO ledger_service;
        ALTER TABLE analytics_counts OWNER TO ledger_service;
        ALTER TABLE delivery_alerts OWNER TO ledger_service;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'could not give the analytics tables to ledger_service (%): the service uses them with the privileges of the role it connects as', SQLERRM;
END;
$$;
