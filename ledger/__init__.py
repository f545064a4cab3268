"""Write side of the delivery ledger: settings, database, Plivo callbacks, the event store."""
