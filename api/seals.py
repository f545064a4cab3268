"""``/v1/seals``: the sealed history's head and blocks, to check proofs against a head."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import QueryParameter

from api.auth import require_token
from api.problems import Problem, problem_responses
from api.services import services_of
from ledger.seals import Block, blocks_after, last_block

#: The most blocks one page returns.
MAX_BLOCKS = 1000


class SealHead(msgspec.Struct, frozen=True, kw_only=True):
    """The newest block's head: keep ``line`` outside the database (``ledger verify --head``)."""

    block: int
    total_events: int
    root: str
    chain: str
    line: str
    sealed_at: datetime


class SealedBlock(msgspec.Struct, frozen=True, kw_only=True):
    """One block: what links it to the previous one (``chain`` = SHA-256(previous chain ‖
    root ‖ header)). Hashes are hex; ``header`` is the canonical header as text."""

    block: int
    event_count: int
    total_events: int
    root: str
    header: str
    chain: str
    sealed_at: datetime


def _sealed_block(block: Block) -> SealedBlock:
    return SealedBlock(
        block=block.block,
        event_count=block.event_count,
        total_events=block.total_events,
        root=block.root.hex(),
        header=block.header.decode(),
        chain=block.chain.hex(),
        sealed_at=block.sealed_at,
    )


class SealController(Controller):
    """``/v1/seals``: heads and blocks of the sealed history."""

    path = "/v1/seals"
    guards = [require_token]  # noqa: RUF012 - Litestar's declared class attribute
    tags = ["seals"]  # noqa: RUF012
    security = [{"bearer": []}]  # noqa: RUF012

    @get(
        "/head",
        summary="The newest seal head",
        description="The latest block's number, total events sealed, root and chain hash, and "
        "the one-line head to keep outside the database.",
        responses=problem_responses(401, 404, 503),
    )
    async def head(self, request: Request[Any, Any, Any]) -> SealHead:
        """The head, or 404 before the first block."""
        async with services_of(request).pool.connection() as conn:
            block = await last_block(conn)
        if block is None:
            raise Problem(404, "Nothing is sealed yet: the sealer closes a block within seconds.")
        head = block.head
        return SealHead(
            block=head.block,
            total_events=head.total_events,
            root=head.root.hex(),
            chain=head.chain.hex(),
            line=head.line(),
            sealed_at=block.sealed_at,
        )

    @get(
        "/",
        summary="Blocks after a given block",
        description="Walk from the block of an inclusion proof to a later head: each block's "
        "chain must equal SHA-256(previous chain ‖ root ‖ header).",
        responses=problem_responses(400, 401, 503),
    )
    async def blocks(
        self,
        request: Request[Any, Any, Any],
        after: Annotated[int, QueryParameter(ge=0)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_BLOCKS)] = 100,
    ) -> list[SealedBlock]:
        """Up to ``limit`` blocks after block ``after``."""
        async with services_of(request).pool.connection() as conn:
            return [_sealed_block(block) for block in await blocks_after(conn, after, limit)]
