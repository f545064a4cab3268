"""Size: what the ledger costs on disk per event and per message.

Measured on the replay dataset. Its indexes were built in one go after the load (tightly
packed), so they are smaller than indexes grown by live random inserts; the ingest notes
give the bytes per event of a table filled over HTTP for comparison.
"""

from __future__ import annotations

from bench.harness import Database
from bench.report import Figure, Section

_TOTALS = """
SELECT count(*), count(DISTINCT message_uuid),
       pg_total_relation_size('events'), pg_table_size('events'), pg_indexes_size('events'),
       coalesce(sum(octet_length(payload::text)), 0), coalesce(sum(pg_column_size(payload)), 0)
FROM events
"""

_INDEXES = """
SELECT indexrelid::regclass::text, pg_relation_size(indexrelid)
FROM pg_index WHERE indrelid = 'events'::regclass ORDER BY 2 DESC
"""


def bytes_per_event(db: Database) -> float | None:
    """Total bytes of ``events`` (heap, TOAST and indexes) per event; None when empty."""
    with db.connect() as conn:
        conn.execute("VACUUM (ANALYZE) events")  # up-to-date free space map and statistics
        row = conn.execute(
            "SELECT pg_total_relation_size('events')::float8 / nullif(count(*), 0) FROM events"
        ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def run(db: Database) -> Section:
    """Bytes on disk per event and per message, against the payloads' own size."""
    section = Section(f"size: the events table on disk ({db.label})")
    with db.connect() as conn:
        conn.execute("VACUUM (ANALYZE) events")
        row = conn.execute(_TOTALS).fetchone()
        assert row is not None
        events, messages, total, table, indexes, payload_text, payload_stored = row
        index_sizes = conn.execute(_INDEXES).fetchall()
    if not events:
        section.note("the events table is empty: nothing to measure")
        return section
    payload_per_event = payload_text / events
    section.add(
        Figure(
            "bytes on disk per event (heap + TOAST + indexes)",
            total / events,
            "B",
            "payload as JSON text per event",
            payload_per_event,
            note=f"{events:,} events, {total / 2**20:,.0f} MiB in all",
        )
    )
    section.add(
        Figure(
            "bytes on disk per message",
            total / messages,
            "B",
            "payload JSON text per message",
            payload_text / messages,
            note=f"{messages:,} messages, {events / messages:.2f} events each",
        )
    )
    section.add(
        Figure(
            "heap + TOAST bytes per event",
            table / events,
            "B",
            "payload as stored (jsonb) per event",
            payload_stored / events,
        )
    )
    section.table(
        "Where the bytes are",
        ["relation", "bytes per event", "share"],
        [["heap + TOAST", f"{table / events:,.0f}", f"{100 * table / total:.0f}%"]]
        + [
            [name, f"{bytes_ / events:,.0f}", f"{100 * bytes_ / total:.0f}%"]
            for name, bytes_ in index_sizes
        ],
    )
    section.note(
        f"indexes together: {indexes / events:,.0f} B per event; they were built after the"
        " bulk load (packed), so a table grown by live inserts has larger ones (see the"
        " ingest notes for bytes per event after HTTP ingest)"
    )
    return section
