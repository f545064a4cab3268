"""``ledger verify``'s engine: an intact ledger verifies, and every kind of tampering an owner
or superuser can do behind the triggers is found, with its position and kind."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import uuid4

import msgspec
import psycopg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.seals import Head, last_block, seal_settled
from ledger.signatures import sign_v2
from ledger.verify import Credentials, VerifyReport, verify_ledger
from ledger.verify_parallel import verify_in_parallel
from tests.conftest import CALLBACK_URL, PLIVO_TOKEN, SYSTEM_KEY, post_lifecycles

Conn = psycopg.AsyncConnection[Any]
Client = AsyncTestClient[Litestar]
CREDENTIALS = Credentials(
    auth_tokens=(PLIVO_TOKEN,), main_auth_tokens=(), system_keys=(SYSTEM_KEY,)
)
BLOCK_EVENTS = 4


async def sealed_ledger(client: Client, conn: Conn) -> None:
    await post_lifecycles(client)
    assert await seal_settled(conn, block_events=BLOCK_EVENTS)


async def verify(conn: Conn, **options: Any) -> VerifyReport:
    return await verify_ledger(conn, CREDENTIALS, **options)


async def positions(conn: Conn) -> list[int]:
    cursor = await conn.execute("SELECT position FROM events ORDER BY transaction_id, position")
    return [row[0] for row in await cursor.fetchall()]


async def behind_the_triggers(conn: Conn, *statements: str) -> None:
    """Run ``statements`` as a superuser who switches the ledger's triggers off."""
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        for statement in statements:
            await conn.execute(statement.encode())


def only(report: VerifyReport) -> tuple[str, int | None]:
    assert report.finding_count == 1, report.findings
    finding = report.findings[0]
    return finding.kind, finding.position


async def test_an_untouched_sealed_ledger_verifies_intact(
    client_without_projectors: Client, conn: Conn
) -> None:
    await sealed_ledger(client_without_projectors, conn)
    stored = await positions(conn)

    report = await verify(conn)

    assert report.intact, report.findings
    assert (report.events, report.sealed_events, report.unsealed_events) == (
        len(stored),
        len(stored),
        0,
    )
    assert report.blocks == -(-len(stored) // BLOCK_EVENTS)
    assert report.proofs["plivo-v3"] == len(stored)
    newest = await last_block(conn)
    assert newest is not None
    assert report.head == newest.head


async def test_an_event_updated_behind_the_triggers_is_found_altered_at_its_position(
    client_without_projectors: Client, conn: Conn
) -> None:
    await sealed_ledger(client_without_projectors, conn)
    target = (await positions(conn))[5]

    await behind_the_triggers(
        conn, f"UPDATE events SET status = 'tampered' WHERE position = {target}"
    )

    assert only(await verify(conn)) == ("altered", target)


async def test_an_event_deleted_with_triggers_disabled_is_found_deleted(
    client_without_projectors: Client, conn: Conn
) -> None:
    await sealed_ledger(client_without_projectors, conn)
    target = (await positions(conn))[2]

    await conn.execute("ALTER TABLE events DISABLE TRIGGER USER")
    await conn.execute(f"DELETE FROM events WHERE position = {target}".encode())
    await conn.execute("ALTER TABLE events ENABLE TRIGGER USER")

    assert only(await verify(conn)) == ("deleted", target)


async def test_a_forged_insert_claiming_a_v3_signature_is_found_inserted(
    client_without_projectors: Client, conn: Conn
) -> None:
    await sealed_ledger(client_without_projectors, conn)
    cursor = await conn.execute(
        "INSERT INTO events (message_uuid, event_type, status, occurred_at, dedup_key,"
        " payload, meta)"
        " SELECT message_uuid, event_type, 'delivered', occurred_at, '\\x00ff',"
        '  payload || \'{"Status": "delivered"}\', meta'
        " FROM events ORDER BY position LIMIT 1 RETURNING position"
    )
    forged = (await cursor.fetchone() or (None,))[0]
    await seal_settled(conn, block_events=BLOCK_EVENTS)

    assert only(await verify(conn)) == ("inserted", forged)


async def test_a_forged_system_event_is_found_inserted(
    client_without_projectors: Client, conn: Conn
) -> None:
    await sealed_ledger(client_without_projectors, conn)
    cursor = await conn.execute(
        "INSERT INTO events (message_uuid, event_type, status, dedup_key, payload, meta)"
        " VALUES (%s, 'message.expired', 'expired', '\\x01', '{}',"
        '  \'{"source": "system", "signature": "system", "mac": "AAAA"}\')'
        " RETURNING position",
        (uuid4(),),
    )
    forged = (await cursor.fetchone() or (None,))[0]

    report = await verify(conn)

    assert only(report) == ("inserted", forged)
    assert report.unsealed_events == 1


async def test_a_swapped_pair_of_events_is_found_reordered(
    client_without_projectors: Client, conn: Conn
) -> None:
    await sealed_ledger(client_without_projectors, conn)
    first, second = (await positions(conn))[:2]
    columns = "message_uuid, event_type, status, occurred_at, payload, meta"
    cursor = await conn.execute(
        f"SELECT encode(dedup_key, 'hex') FROM events WHERE position IN ({first}, {second})"
        " ORDER BY position"
    )
    key_of_first, key_of_second = [row[0] for row in await cursor.fetchall()]

    # Every column but the position trades places (the unique dedup key through a spare one).
    await behind_the_triggers(
        conn,
        f"UPDATE events AS e SET ({columns}) = (SELECT {columns} FROM events AS o"
        f" WHERE o.position = CASE e.position WHEN {first} THEN {second} ELSE {first} END)"
        f" WHERE e.position IN ({first}, {second})",
        f"UPDATE events SET dedup_key = '\\xdead' WHERE position = {first}",
        f"UPDATE events SET dedup_key = '\\x{key_of_first}' WHERE position = {second}",
        f"UPDATE events SET dedup_key = '\\x{key_of_second}' WHERE position = {first}",
    )

    assert only(await verify(conn)) == ("reordered", first)


async def test_an_event_moved_in_fence_order_is_found_reordered(
    client_without_projectors: Client, conn: Conn
) -> None:
    await sealed_ledger(client_without_projectors, conn)
    first, second = (await positions(conn))[:2]

    # Give the second event a transaction id just below the first's: it now sorts first.
    await behind_the_triggers(
        conn,
        f"UPDATE events SET transaction_id = ((SELECT transaction_id::text::bigint - 1"
        f" FROM events WHERE position = {first})::text)::xid8 WHERE position = {second}",
    )

    assert only(await verify(conn)) == ("reordered", first)


async def test_a_rewritten_seal_is_found_altered_at_its_block(
    client_without_projectors: Client, conn: Conn
) -> None:
    await sealed_ledger(client_without_projectors, conn)
    cursor = await conn.execute("SELECT positions[1] FROM seals WHERE block = 2")
    first_of_block = (await cursor.fetchone() or (None,))[0]

    await behind_the_triggers(conn, "UPDATE seals SET root = sha256('forged') WHERE block = 2")

    report = await verify(conn)
    assert only(report) == ("altered", first_of_block)
    assert report.findings[0].block == 2


async def test_an_event_slipped_into_a_sealed_range_is_found_inserted(
    client_without_projectors: Client, conn: Conn
) -> None:
    await sealed_ledger(client_without_projectors, conn)
    cursor = await conn.execute(
        "INSERT INTO events (transaction_id, message_uuid, event_type, status, dedup_key,"
        " payload, meta) SELECT transaction_id, message_uuid, event_type, status, '\\x02',"
        " payload, meta FROM events ORDER BY position LIMIT 1 RETURNING position"
    )
    slipped = (await cursor.fetchone() or (None,))[0]

    report = await verify(conn)

    assert ("inserted", slipped) in [(f.kind, f.position) for f in report.findings]
    assert report.findings[0].block == 1


async def test_the_head_catches_a_full_rewrite_of_events_and_seals(
    client_without_projectors: Client, conn: Conn
) -> None:
    await sealed_ledger(client_without_projectors, conn)
    newest = await last_block(conn)
    assert newest is not None
    witness = Head.parse(newest.head.line())
    target = (await positions(conn))[1]

    # A superuser rewrites an event, then throws the seals away and recomputes them all.
    await behind_the_triggers(
        conn,
        f"UPDATE events SET status = 'tampered' WHERE position = {target}",
        "DELETE FROM seals",
    )
    await seal_settled(conn, block_events=BLOCK_EVENTS)

    assert (await verify(conn)).intact  # self-consistent again...
    report = await verify(conn, witness=witness)  # ...but not an extension of the head kept
    assert only(report) == ("altered", None)
    assert report.findings[0].block == witness.block


async def test_a_head_block_missing_from_the_ledger_is_found_deleted(
    client_without_projectors: Client, conn: Conn
) -> None:
    await sealed_ledger(client_without_projectors, conn)
    newest = await last_block(conn)
    assert newest is not None
    later = msgspec.structs.replace(newest.head, block=newest.block + 5)

    report = await verify(conn, witness=later)

    assert [(f.kind, f.block) for f in report.findings] == [("deleted", newest.block + 5)]


async def test_an_unsealed_event_older_than_the_grace_is_reported(
    client_without_projectors: Client, conn: Conn
) -> None:
    await post_lifecycles(client_without_projectors, messages=1)

    assert (await verify(conn)).intact  # fresh: the sealer has time yet
    report = await verify(conn, unsealed_grace=timedelta(0))
    assert only(report) == ("unsealed", (await positions(conn))[0])


async def test_an_unsealed_v2_event_whose_body_changed_is_caught_by_its_nonce_pin(
    client_without_projectors: Client, conn: Conn
) -> None:
    message = str(uuid4())
    response = await client_without_projectors.post(
        "/plivo/status",
        content=f"MessageUUID={message}&Status=sent&Sequence=2".encode(),
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "x-plivo-signature-v2": sign_v2(url=CALLBACK_URL, nonce="v2n", auth_token=PLIVO_TOKEN),
            "x-plivo-signature-v2-nonce": "v2n",
        },
    )
    position = response.json()["position"]
    assert (await verify(conn)).proofs["plivo-v2"] == 1

    await behind_the_triggers(
        conn,
        'UPDATE events SET payload = payload || \'{"Status": "delivered"}\''
        f" WHERE position = {position}",
    )

    assert only(await verify(conn)) == ("altered", position)


async def test_since_a_block_only_later_blocks_and_events_are_walked(
    client_without_projectors: Client, conn: Conn
) -> None:
    await sealed_ledger(client_without_projectors, conn)
    early = (await positions(conn))[0]
    await behind_the_triggers(conn, f"UPDATE events SET status = 'x' WHERE position = {early}")

    report = await verify(conn, since_block=2)

    assert report.intact
    assert report.first_block == 2
    assert report.events == len(await positions(conn)) - BLOCK_EVENTS


async def test_a_retired_auth_token_still_proves_old_events(
    client_without_projectors: Client, conn: Conn
) -> None:
    await sealed_ledger(client_without_projectors, conn)
    rotated = Credentials(
        auth_tokens=("the-new-token", PLIVO_TOKEN), main_auth_tokens=(), system_keys=()
    )
    assert (await verify_ledger(conn, rotated)).intact

    forgotten = Credentials(auth_tokens=("the-new-token",), main_auth_tokens=(), system_keys=())
    report = await verify_ledger(conn, forgotten)
    assert {f.kind for f in report.findings} == {"inserted"}


async def test_a_parallel_verify_checks_every_range_and_agrees_with_one_walk(
    client_without_projectors: Client, conn: Conn, database_url: str
) -> None:
    await post_lifecycles(client_without_projectors, messages=6)
    await seal_settled(conn, block_events=2)
    newest = await last_block(conn)
    assert newest is not None
    witness = newest.head
    early, late = (await positions(conn))[1], (await positions(conn))[-2]
    await behind_the_triggers(
        conn, f"UPDATE events SET status = 'tampered' WHERE position IN ({early}, {late})"
    )

    single = await verify(conn, witness=witness)
    parallel = await verify_in_parallel(
        database_url, CREDENTIALS, jobs=3, witness=witness, min_blocks_per_job=2
    )

    found = [(f.kind, f.position) for f in parallel.findings]
    assert found == [("altered", early), ("altered", late)]
    assert found == [(f.kind, f.position) for f in single.findings]
    assert (parallel.events, parallel.blocks, parallel.proofs) == (
        single.events,
        single.blocks,
        single.proofs,
    )
    assert (parallel.head, parallel.extends_witness) == (single.head, True)
