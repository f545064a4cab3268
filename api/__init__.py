"""Interfaces: the Litestar app and the ``ledger`` command line."""
