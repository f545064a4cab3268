"""The long-lived parts one app process shares between requests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from psycopg_pool import AsyncConnectionPool

from api.feed_hub import FeedHub
from ledger.group_commit import GroupCommitter
from ledger.plivo_api import PlivoApi
from ledger.settings import Settings


@dataclass(frozen=True)
class Services:
    """Settings, the read pool, the operations pool (its own small budget, so that probes
    answer even when reads or ingest use every connection), the group committer (which owns
    the ingest pool), the accepted read-API and send tokens, the live feed's hub, and the
    Plivo API client (None when sending is not configured)."""

    settings: Settings
    pool: AsyncConnectionPool[Any]
    ops_pool: AsyncConnectionPool[Any]
    committer: GroupCommitter
    api_tokens: tuple[str, ...]
    feed: FeedHub
    send_tokens: tuple[str, ...] = ()
    plivo: PlivoApi | None = None


def services_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Services:
    """The app's services, read from its state: they live as long as the process, so a
    plain attribute read replaces a per-request dependency resolution."""
    found: Services = connection.app.state.services
    return found
