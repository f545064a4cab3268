"""The long-lived parts one app process shares between requests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.datastructures import State
from psycopg_pool import AsyncConnectionPool

from api.feed_hub import FeedHub
from ledger.group_commit import GroupCommitter
from ledger.settings import Settings


@dataclass(frozen=True)
class Services:
    """Settings, the read pool, the operations pool (its own small budget, so that probes
    answer even when reads or ingest use every connection), the group committer (which owns
    the ingest pool), the accepted read-API tokens and the live feed's hub."""

    settings: Settings
    pool: AsyncConnectionPool[Any]
    ops_pool: AsyncConnectionPool[Any]
    committer: GroupCommitter
    api_tokens: tuple[str, ...]
    feed: FeedHub


def services(state: State) -> Services:
    """The app's services (a Litestar dependency)."""
    found: Services = state.services
    return found
