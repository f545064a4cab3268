"""Benchmarks of the delivery ledger: ``python -m bench`` (see bench/README.md)."""
