-- delivery_analytics (projections/analytics.py), version 2: the cube rolled up by day (in
-- LEDGER_TIMEZONE), kept by the projector beside the hours, so that a breakdown over weeks
-- reads a cell per day; and the lookup data as tables the fold joins by key. The new
-- projector version rebuilds the view, which fills them (the lookup data comes from the
-- mcc-mnc-p1 and phonenumbers packages).
-- The same cells as analytics_counts, by day.
CREATE TABLE analytics_days (LIKE analytics_counts INCLUDING ALL);
ALTER TABLE analytics_days RENAME COLUMN hour TO day;

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
