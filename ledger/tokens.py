"""Read-API bearer tokens: configured ones, or one generated once and kept in the data dir."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from pathlib import Path

from ledger.local_secrets import generated_secret
from ledger.settings import Settings

TOKEN_FILE = "api-token"  # noqa: S105 - a file name, not a secret


def token_path(settings: Settings) -> Path:
    """Where the generated token lives."""
    return settings.data_dir / TOKEN_FILE


def ensure_api_tokens(settings: Settings) -> tuple[tuple[str, ...], bool]:
    """The accepted tokens, and whether one was generated just now.

    ``LEDGER_API_TOKENS`` wins; otherwise a token is generated on first use and stored with
    owner-only permissions, so every later start (and ``ledger token``) finds the same one.
    """
    if settings.api_tokens:
        return settings.api_tokens, False
    token, created = generated_secret(token_path(settings))
    return (token,), created


def token_matches(presented: str, accepted: Sequence[str]) -> bool:
    """Constant-time check of a presented token against every accepted one."""
    given = presented.encode()
    matched = False
    for token in accepted:
        matched |= hmac.compare_digest(given, token.encode())
    return matched
