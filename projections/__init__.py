"""Read side: projectors that fold the ledger into views, the catch-up runner, and replay."""
