"""Numbered plain-SQL migrations, shipped as package data and applied by ``ledger.migrate``."""
