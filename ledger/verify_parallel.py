"""``ledger verify`` on every core: the blocks split into contiguous ranges, each verified by
a process of its own, the reports merged.

Every range starts from the stored chain of the block before it and checks its own blocks'
links, so the ranges together check every link exactly as one walk would. Each process reads
its own snapshot; a range's snapshot may be a little newer than another's, which only
matters for events appended meanwhile (the last range, which also takes the unsealed events,
starts last).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Final

import msgspec

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

from ledger.database import connect
from ledger.seals import Head, last_block
from ledger.verify import (
    MAX_FINDINGS,
    Credentials,
    Finding,
    ProgressCallback,
    VerifyReport,
    verify_ledger,
)

#: Fewer blocks than this per process are not worth a process of their own.
MIN_BLOCKS_PER_JOB: Final = 32

if TYPE_CHECKING:
    #: Progress reports, (range, done, total), from the pool's processes; None ends the relay.
    ProgressQueue = Queue[tuple[int, int, int] | None]

_progress: ProgressQueue | None = None


def default_jobs() -> int:
    """One process per core this process may use, at most 4 (the database needs some)."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


async def verify_in_parallel(
    url: str,
    credentials: Credentials,
    *,
    jobs: int,
    since_block: int = 1,
    witness: Head | None = None,
    unsealed_grace: timedelta = timedelta(minutes=5),
    on_progress: ProgressCallback | None = None,
    min_blocks_per_job: int = MIN_BLOCKS_PER_JOB,
) -> VerifyReport:
    """:func:`ledger.verify.verify_ledger` over the ledger at ``url``, in up to ``jobs``
    processes, each with at least ``min_blocks_per_job`` blocks (so one, in this process,
    when the ledger is too small to be worth splitting)."""
    started = time.perf_counter()
    async with connect(url) as conn:
        newest = await last_block(conn)
    last = newest.block if newest is not None else 0
    ranges = _split(since_block, last, jobs, min_blocks_per_job)
    if len(ranges) == 1:
        async with connect(url) as conn:
            return await verify_ledger(
                conn,
                credentials,
                since_block=since_block,
                witness=witness,
                unsealed_grace=unsealed_grace,
                on_progress=on_progress,
            )
    context = multiprocessing.get_context("spawn")  # no inherited connections or loops
    queue: ProgressQueue = context.Queue()
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=len(ranges), mp_context=context, initializer=_share, initargs=(queue,)
    ) as pool:
        loop = asyncio.get_running_loop()
        parts = [
            loop.run_in_executor(
                pool,
                _verify_range,
                _Range(
                    url=url,
                    credentials=credentials,
                    index=index,
                    first=first,
                    until=until,
                    witness=witness if _holds(witness, first, until, last) else None,
                    unsealed_grace=unsealed_grace,
                ),
            )
            for index, (first, until) in enumerate(ranges)
        ]
        relay = asyncio.create_task(_relay(queue, len(ranges), on_progress))
        try:
            reports = list(await asyncio.gather(*parts))
        finally:
            queue.put(None)  # the relay's thread is parked in queue.get: release it
            await relay
    return _merged(reports, since_block, witness, time.perf_counter() - started)


def _split(first: int, last: int, jobs: int, minimum: int) -> list[tuple[int, int | None]]:
    """Contiguous block ranges, the last one open (it takes the unsealed events too)."""
    blocks = last - first + 1
    count = max(1, min(jobs, blocks // minimum))
    size = -(-blocks // count) if blocks > 0 else 0
    ranges: list[tuple[int, int | None]] = [
        (first + i * size, first + (i + 1) * size - 1) for i in range(count - 1)
    ]
    ranges.append((first + (count - 1) * size, None))
    return ranges


def _holds(witness: Head | None, first: int, until: int | None, last: int) -> bool:
    """Whether the range checks the witness's block (the last range takes one past the end,
    to report it missing)."""
    if witness is None:
        return False
    if until is None:
        return witness.block >= first or witness.block > last
    return first <= witness.block <= until


def _share(queue: ProgressQueue) -> None:
    global _progress  # noqa: PLW0603 - the pool's initializer hands each process its queue
    _progress = queue


class _Range(msgspec.Struct, frozen=True, kw_only=True):
    """One process's share of a parallel verify."""

    url: str
    credentials: Credentials
    index: int
    first: int
    until: int | None
    witness: Head | None
    unsealed_grace: timedelta


def _verify_range(part: _Range) -> bytes:
    """Verify one range in this (pool) process; the report, msgspec-encoded."""

    def report_progress(done: int, total: int) -> None:
        if _progress is not None:
            _progress.put((part.index, done, total))

    async def run() -> VerifyReport:
        async with connect(part.url) as conn:
            return await verify_ledger(
                conn,
                part.credentials,
                since_block=part.first,
                until_block=part.until,
                witness=part.witness,
                unsealed_grace=part.unsealed_grace,
                on_progress=report_progress,
            )

    return msgspec.msgpack.encode(asyncio.run(run()))


async def _relay(queue: ProgressQueue, parts: int, on_progress: ProgressCallback | None) -> None:
    """Sum the parts' progress reports into one callback, until the None at the end."""
    done = [0] * parts
    total = [0] * parts
    loop = asyncio.get_running_loop()
    while (report := await loop.run_in_executor(None, queue.get)) is not None:
        index, part_done, part_total = report
        done[index], total[index] = part_done, part_total
        if on_progress is not None:
            on_progress(sum(done), sum(total))


def _merged(
    encoded: list[bytes], since_block: int, witness: Head | None, seconds: float
) -> VerifyReport:
    reports = [msgspec.msgpack.decode(part, type=VerifyReport) for part in encoded]
    findings: list[Finding] = [finding for report in reports for finding in report.findings]
    proofs: dict[str, int] = {}
    for report in reports:
        for proof, count in report.proofs.items():
            proofs[proof] = proofs.get(proof, 0) + count
    extends = next(
        (report.extends_witness for report in reports if report.witness is not None), None
    )
    return VerifyReport(
        events=sum(report.events for report in reports),
        blocks=sum(report.blocks for report in reports),
        first_block=since_block,
        sealed_events=sum(report.sealed_events for report in reports),
        unsealed_events=reports[-1].unsealed_events,
        proofs=proofs,
        findings=findings[:MAX_FINDINGS],
        finding_count=sum(report.finding_count for report in reports),
        head=reports[-1].head,
        witness=witness,
        extends_witness=extends,
        seconds=seconds,
    )
