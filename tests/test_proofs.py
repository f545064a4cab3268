"""Inclusion proofs, checked by a verifier written here only from the README's "Proof format".

Nothing below imports the ledger's hashing code: JCS comes from the independent ``rfc8785``
package, SHA-256 from hashlib, and the path walk is RFC 9162 §2.1.3.2 written out again.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

import psycopg
import rfc8785
from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.seals import seal_settled
from tests.conftest import post_lifecycles

Client = AsyncTestClient[Litestar]


def canonical_time(value: str | None) -> str | None:
    """README: the instant in UTC as YYYY-MM-DDTHH:MM:SS.ffffffZ, six fractional digits."""
    if value is None:
        return None
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def leaf_hash(event: dict[str, Any]) -> bytes:
    """README: SHA-256(0x00 ‖ JCS(document)), the document built from the event as returned."""
    document = {
        "v": 1,
        "position": event["position"],
        "transaction_id": event["transaction_id"],
        "message_uuid": event["message_uuid"],
        "event_type": event["event_type"],
        "status": event["status"],
        "occurred_at": canonical_time(event["occurred_at"]),
        "recorded_at": canonical_time(event["recorded_at"]),
        "dedup_key": event["dedup_key"],
        "payload": event["payload"],
        "meta": event["meta"],
    }
    return hashlib.sha256(b"\x00" + rfc8785.dumps(document)).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes | None:
    """RFC 9162 §2.1.3.2, step by step."""
    if index >= size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def proves(event: dict[str, Any], head: dict[str, Any], later_blocks: list[dict[str, Any]]) -> bool:
    """README: leaf → root through the audit path, root → chain with the previous chain and
    the header, then chain → head through every later block."""
    seal = event["seal"]
    leaf = leaf_hash(event)
    if leaf.hex() != seal["leaf_hash"]:
        return False
    path = [bytes.fromhex(h) for h in seal["audit_path"]]
    root = root_from(leaf, seal["leaf_index"], seal["tree_size"], path)
    if root is None or root.hex() != seal["root"]:
        return False
    chain = hashlib.sha256(
        bytes.fromhex(seal["previous_chain"]) + root + seal["header"].encode()
    ).digest()
    if chain.hex() != seal["chain"]:
        return False
    for block in later_blocks:
        if block["block"] > head["block"]:
            break
        chain = hashlib.sha256(
            chain + bytes.fromhex(block["root"]) + block["header"].encode()
        ).digest()
        if chain.hex() != block["chain"]:
            return False
    return bool(chain.hex() == head["chain"])


async def sealed_history(client: Client, conn: psycopg.AsyncConnection[Any]) -> list[str]:
    first = await post_lifecycles(client, messages=3, seed=1)
    await seal_settled(conn, block_events=4)
    await post_lifecycles(client, messages=2, seed=2)
    await seal_settled(conn, block_events=4)
    return first


async def test_every_sealed_event_is_proven_against_the_current_head(
    client_without_projectors: Client, conn: psycopg.AsyncConnection[Any], auth: dict[str, str]
) -> None:
    messages = await sealed_history(client_without_projectors, conn)
    head = (await client_without_projectors.get("/v1/seals/head", headers=auth)).json()
    assert head["line"].startswith(f"ledger-seal-head v1 block={head['block']} ")

    for message in messages:
        trail = (
            await client_without_projectors.get(f"/v1/messages/{message}/events", headers=auth)
        ).json()
        for event in trail["events"]:
            later = (
                await client_without_projectors.get(
                    "/v1/seals", params={"after": event["seal"]["block"]}, headers=auth
                )
            ).json()
            assert proves(event, head, later), event["position"]


async def test_an_event_changed_in_transit_fails_the_proof(
    client_without_projectors: Client, conn: psycopg.AsyncConnection[Any], auth: dict[str, str]
) -> None:
    [message, *_] = await sealed_history(client_without_projectors, conn)
    head = (await client_without_projectors.get("/v1/seals/head", headers=auth)).json()
    event = (
        await client_without_projectors.get(f"/v1/messages/{message}/events", headers=auth)
    ).json()["events"][0]
    later = (
        await client_without_projectors.get(
            "/v1/seals", params={"after": event["seal"]["block"]}, headers=auth
        )
    ).json()
    assert proves(event, head, later)

    assert not proves({**event, "status": "delivered!"}, head, later)
    assert not proves({**event, "payload": {**event["payload"], "To": "1"}}, head, later)
    forged_key = base64.b64encode(b"another key").decode()
    assert not proves({**event, "dedup_key": forged_key}, head, later)


async def test_an_unsealed_event_has_no_proof_yet(
    client_without_projectors: Client, auth: dict[str, str]
) -> None:
    [message] = await post_lifecycles(client_without_projectors, messages=1)

    trail = (
        await client_without_projectors.get(f"/v1/messages/{message}/events", headers=auth)
    ).json()

    assert [event["seal"] for event in trail["events"]] == [None] * trail["event_count"]
    assert (await client_without_projectors.get("/v1/seals/head", headers=auth)).status_code == 404
