-- delivery_analytics (projections/analytics.py), version 2: the cube rolled up by day (in
-- LEDGER_TIMEZONE), kept by the projector beside the hours, so that a breakdown over weeks
-- reads a cell per day; and the lookup data as tables the fold joins by key. The new
-- projector version rebuilds the view, which fills them (the lookup data comes from the
-- mcc-mnc-p1 and phonenumbers packages).
-- The same cells as analytics_counts, by day. (Spelled out rather than LIKE analytics_counts:
-- PostgreSQL 18 names the copied NOT NULL constraints after the source table.)
CREATE TABLE analytics_days (
    day             timestamptz NOT NULL,
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
    PRIMARY KEY (day, country, carrier, sender, tag, status, error_family)
);

-- Networks by MCC and MNC (mnc -1: the country's row for an unknown MNC), and the number
-- prefixes that place a recipient without an MCC.
CREATE TABLE analytics_networks (
    mcc      text COLLATE "C" NOT NULL,
    mnc      integer NOT NULL,
    country  text COLLATE "C" NOT NULL,
    carrier  text COLLATE "C" NOT NULL,
    PRIMARY KEY (mcc, mnc)
);
CREATE TABLE analytics_number_prefixes (
    prefix   text COLLATE "C" PRIMARY KEY,
    country  text COLLATE "C" NOT NULL
);

-- The service's role owns them, as it owns the view's other tables (migration 007).
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_service') THEN
        ALTER TABLE analytics_days OWNER TO ledger_service;
        ALTER TABLE analytics_networks OWNER TO ledger_service;
        ALTER TABLE analytics_number_prefixes OWNER TO ledger_service;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'could not give the new analytics tables to ledger_service (%): the service uses them with the privileges of the role it connects as', SQLERRM;
END;
$$;
