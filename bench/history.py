"""Realistic ledger history made with set-based SQL (no HTTP, no row-by-row Python).

Each message follows ``api.simulate.lifecycle``, to one of its networks from one of its
senders: 80% delivered (queued, sent, delivered), 8% undelivered (with an error code), 7%
failed (queued, failed), 5% still sent, so 2.88 events per message. Payloads carry every
field a real callback has, as verbatim strings, meta says how it was "authenticated", dedup
keys are derived exactly as ``ledger.callbacks.to_event`` derives them, and no event is a
duplicate. Messages start half a second apart from a fixed date, so a million events span
about two days and ten million about three weeks (the metrics view gets many days).

Everything is a pure function of (seed, message number), so a message's UUID can be
recomputed in Python (:func:`message_uuid`) to look it up, and growing a table from 250k to
1M events just adds message numbers.

Large loads drop the table's secondary indexes, insert, and build them again: building a
b-tree over 10M random UUIDs is several times faster than maintaining it row by row.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from api.simulate import NETWORKS, SENDERS
from bench.harness import Database

EVENTS_PER_MESSAGE = 0.88 * 3 + 0.12 * 2
#: Messages per INSERT statement (and transaction): ~144k events, each chunk its own xid,
#: as the ledger's group-commit transactions have many.
CHUNK_MESSAGES = 50_000
#: Below this many new events, inserting with the indexes in place is fast enough.
REBUILD_INDEXES_FROM = 200_000

# The query proper. Per-message random draws come from hashes of (seed, message, k), so the
# data is the same on every run and every server.
_INSERT = """
INSERT INTO events (message_uuid, event_type, status, occurred_at, recorded_at, dedup_key,
                    payload, meta)
SELECT message_uuid, 'plivo.status_reported', status, at,
       at + (20 + 180 * u6) * interval '1 millisecond',
       sha256('\\x76310073746174757300'::bytea  -- b"v1\\0status\\0", as ledger.callbacks
              || convert_to('["' || message_uuid || '","' || status || '",' || seq || ']',
                            'UTF8')),
       jsonb_build_object(
           'From', '1415555' || lpad(floor(u2 * {senders})::int::text, 4, '0'),
           'To', ({prefixes})[network]
                 || lpad(floor(u9 * 10 ^ ({digits})[network])::bigint::text,
                         ({digits})[network], '0'),
           'MessageUUID', message_uuid::text,
           'ParentMessageUUID', message_uuid::text,
           'PartInfo', '1 of 1',
           'PowerpackUUID', '',
           'Type', 'sms',
           'Units', units::text,
           'MCC', ({mccs})[network],
           'MNC', ({mncs})[network],
           'MessageTime', to_char(started AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
           'Status', status,
           'Sequence', seq::text,
           'ErrorCode', error_code,
           'TotalRate', CASE WHEN charged THEN '0.00350' ELSE '0.00000' END,
           'TotalAmount', CASE WHEN charged THEN (0.00350 * units)::numeric(10, 5)::text
                               ELSE '0.00000' END,
           time_field, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')),
       jsonb_build_object(
           'source', 'plivo',
           'signature', 'v3',
           'nonce', left(md5(message_uuid::text || seq), 20),
           'request_id', md5(seq || message_uuid::text),
           'remote_addr', '127.0.0.1')
FROM (
    SELECT m.*, s.seq, s.status, s.time_field, s.at,
           s.status NOT IN ('queued', 'failed') AS charged,
           CASE s.status
               WHEN 'undelivered' THEN (ARRAY['20', '30', '50', '70', '80', '90', '100', '200'])
                                       [1 + floor(u7 * 8)::int]
               WHEN 'failed' THEN (ARRAY['10', '40', '420', '450', '900', '1000'])
                                  [1 + floor(u7 * 6)::int]
               ELSE '' END AS error_code
    FROM (
        SELECT *,
               CASE WHEN u1 < 0.80 THEN 'delivered' WHEN u1 < 0.88 THEN 'undelivered'
                    WHEN u1 < 0.95 THEN 'failed' ELSE 'sent' END AS outcome,
               (ARRAY[1, 1, 1, 2, 3])[1 + floor(u4 * 5)::int] AS units,
               1 + floor(u3 * {networks})::int AS network,
               started + (50 + 450 * u5) * interval '1 millisecond' AS queued_at
        FROM (
            SELECT m, md5(%(seed)s::text || ':' || m::text)::uuid AS message_uuid,
                   timestamptz '2025-06-01 00:00:00+00' + m * interval '500 milliseconds'
                       AS started,
                   {draws}
            FROM generate_series(%(first)s::bigint, %(last)s::bigint - 1) AS m
            OFFSET 0  -- a fence: draw once per message, not once per use of a draw
        ) AS drawn
        OFFSET 0
    ) AS m
    CROSS JOIN LATERAL (
        SELECT sent_at, sent_at + (-8 * ln(1 - u8)) * interval '1 second' AS reported_at
        FROM (SELECT queued_at + (100 + 2900 * u6) * interval '1 millisecond' AS sent_at)
             AS t
    ) AS t
    CROSS JOIN LATERAL (VALUES
        (1, 'queued', 'QueuedTime', queued_at),
        (2, CASE WHEN outcome = 'failed' THEN 'failed' ELSE 'sent' END,
            CASE WHEN outcome = 'failed' THEN 'DeliveryReportTime' ELSE 'SentTime' END,
            t.sent_at),
        (3, outcome, 'DeliveryReportTime', t.reported_at)
    ) AS s(seq, status, time_field, at)
    WHERE s.seq < 3 OR outcome IN ('delivered', 'undelivered')
) AS e
-- Ledger order is arrival order, so a message's events are spread over the table as they
-- would be in production (audit lookups then touch several pages, not one).
ORDER BY at
"""

_DRAWS = ", ".join(
    f"(hashint8extended(m, %(seed)s * 16 + {k}) & 2147483647)::float8 / 2147483648.0 AS u{k}"
    for k in range(1, 10)
)


def _array(values: list[str] | list[int]) -> str:
    """A SQL array of ``values`` (strings quoted: they are the simulator's digits only)."""
    return "ARRAY[" + ", ".join(repr(value) for value in values) + "]"


# The simulator's networks and senders, drawn equally often as it draws them.
INSERT_SQL = (
    _INSERT.replace("{draws}", _DRAWS)
    .replace("{senders}", str(SENDERS))
    .replace("{networks}", str(len(NETWORKS)))
    .replace("{mccs}", _array([n.mcc for n in NETWORKS]))
    .replace("{mncs}", _array([n.mnc for n in NETWORKS]))
    .replace("{prefixes}", _array([n.prefix for n in NETWORKS]))
    .replace("{digits}", _array([n.digits for n in NETWORKS]))
)


def message_uuid(seed: int, message: int) -> uuid.UUID:
    """The UUID the generator gives message number ``message`` (md5 of "seed:message")."""
    return uuid.UUID(hashlib.md5(f"{seed}:{message}".encode()).hexdigest())


def messages_for(events: int) -> int:
    """How many messages make about ``events`` events."""
    return math.ceil(events / EVENTS_PER_MESSAGE)


def _secondary_indexes(conn: psycopg.Connection[Any]) -> tuple[list[str], list[str]]:
    """DDL to drop and to re-create every index of ``events`` except the primary key."""
    drops, creates = [], []
    for name, definition in conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'events'::regclass AND contype IN ('u', 'x')"
    ).fetchall():
        drops.append(f'ALTER TABLE events DROP CONSTRAINT "{name}"')
        creates.append(f'ALTER TABLE events ADD CONSTRAINT "{name}" {definition}')
    for name, definition in conn.execute(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
        " WHERE indrelid = 'events'::regclass AND NOT indisprimary AND indexrelid NOT IN"
        " (SELECT conindid FROM pg_constraint WHERE conrelid = 'events'::regclass)"
    ).fetchall():
        drops.append(f"DROP INDEX {name}")
        creates.append(definition)
    return drops, creates


def _session(conn: psycopg.Connection[Any]) -> None:
    # A bulk load, not the service: no need to wait for each chunk's WAL flush.
    conn.execute("SET synchronous_commit = off")
    conn.execute("SET work_mem = '256MB'")
    conn.execute("SET maintenance_work_mem = '1GB'")


def _insert_chunks(db: Database, seed: int, chunks: list[tuple[int, int]]) -> None:
    with db.connect() as conn:
        _session(conn)
        for first, last in chunks:
            conn.execute(INSERT_SQL, {"seed": seed, "first": first, "last": last})


def extend(db: Database, *, seed: int, first: int, last: int, jobs: int = 2) -> float:
    """Append messages number ``first`` to ``last - 1`` to ``events``; seconds taken.

    ``jobs`` connections insert chunks side by side (the query is CPU-bound in expression
    evaluation). The table must exist (migrated) and nothing else may write to it meanwhile.
    """
    started = time.perf_counter()
    events = (last - first) * EVENTS_PER_MESSAGE
    chunks = [(n, min(last, n + CHUNK_MESSAGES)) for n in range(first, last, CHUNK_MESSAGES)]
    with db.connect() as conn:
        _session(conn)
        rebuild = events >= REBUILD_INDEXES_FROM
        drops, creates = _secondary_indexes(conn) if rebuild else ([], [])
        for statement in drops:
            conn.execute(statement)
        with ThreadPoolExecutor(jobs) as pool:
            # Interleaved shares keep both jobs busy to the end; list() re-raises errors.
            list(
                pool.map(
                    _insert_chunks,
                    [db] * jobs,
                    [seed] * jobs,
                    [chunks[k::jobs] for k in range(jobs)],
                )
            )
        for statement in creates:
            conn.execute(statement)
        # Set hint bits and the visibility map, and refresh statistics, so that the first
        # measured reader does not pay for the load.
        conn.execute("VACUUM (ANALYZE) events")
        conn.execute("CHECKPOINT")
    return time.perf_counter() - started


class History:
    """The generated part of one database's ledger, grown in steps (250k, then 1M...)."""

    def __init__(self, db: Database, *, seed: int = 1) -> None:
        self.db = db
        self.seed = seed
        #: Messages generated so far, numbered 0 to messages - 1.
        self.messages = 0

    @property
    def events(self) -> int:
        """Events generated so far (approximately: outcomes are drawn per message)."""
        return round(self.messages * EVENTS_PER_MESSAGE)

    def grow_to(self, events: int) -> float:
        """Add messages until about ``events`` events are generated; seconds it took."""
        target = messages_for(events)
        if target <= self.messages:
            return 0.0
        print(f"  generating {events - self.events:,} events with set-based SQL", flush=True)
        seconds = extend(self.db, seed=self.seed, first=self.messages, last=target)
        self.messages = target
        return seconds

    def message_uuid(self, message: int) -> uuid.UUID:
        """The UUID of generated message number ``message``."""
        return message_uuid(self.seed, message)
