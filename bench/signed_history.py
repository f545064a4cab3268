"""Generated history that proves itself: every event V3-signed and its nonce pinned, as the
callback endpoint would have stored it, written with COPY.

bench/history.py generates events far faster in SQL, but without signature material: to
``ledger verify`` those would all be forged. This one builds each event with the product's
own code (the simulator's lifecycles, the V3 signer, the callback-to-event conversion), so
verify re-checks real signatures, then streams them in with COPY.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec

from api.simulate import lifecycle
from bench.harness import Database
from ledger.callbacks import to_event
from ledger.events import EventMeta
from ledger.signatures import body_digest, sign_v3

#: The URL the generated callbacks are signed for (the benchmarks' LEDGER_PUBLIC_URL).
SIGNED_URL = "https://ledger.bench.example/plivo/status"
#: Rows per COPY (each COPY is one transaction, so one place in fence order).
BATCH = 50_000

_encode = msgspec.json.encode


def _signed_rows(
    count: int, *, token: str, seed: int
) -> Iterator[tuple[tuple[object, ...], tuple[object, ...]]]:
    """(events row, callback_nonces row) for ``count`` events of whole lifecycles."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=3)
    made = 0
    while made < count:
        for params in lifecycle(rng, start + timedelta(seconds=rng.randrange(2 * 86400))):
            nonce = f"bench-{seed}-{made:012d}"
            signature = sign_v3(
                method="POST", url=SIGNED_URL, params=params, nonce=nonce, auth_token=token
            )
            meta = EventMeta(
                "plivo",
                "v3",
                nonce=nonce,
                method="POST",
                signed_url=SIGNED_URL,
                signatures={
                    "X-Plivo-Signature-V3": signature,
                    "X-Plivo-Signature-V3-Nonce": nonce,
                },
            )
            event = to_event(tuple(params), meta=meta, timestamps_tz=UTC)
            yield (
                (
                    event.message_uuid,
                    event.event_type,
                    event.status,
                    event.occurred_at,
                    event.dedup_key,
                    _encode(event.payload).decode(),
                    _encode(event.meta).decode(),
                ),
                ("v3", nonce, body_digest(params)),
            )
            made += 1
            if made == count:
                return


def generate(db: Database, count: int, *, token: str, seed: int = 1) -> float:
    """Append ``count`` signed events (and pin their nonces); the seconds it took."""
    started = time.perf_counter()
    rows = _signed_rows(count, token=token, seed=seed)
    with db.connect() as conn:
        while True:
            batch = [row for _, row in zip(range(BATCH), rows, strict=False)]
            if not batch:
                break
            with conn.transaction(), conn.cursor() as cursor:
                with cursor.copy(
                    "COPY events (message_uuid, event_type, status, occurred_at, dedup_key,"
                    " payload, meta) FROM STDIN"
                ) as copy:
                    for event, _ in batch:
                        copy.write_row(event)
                with cursor.copy(
                    "COPY callback_nonces (scheme, nonce, body_digest) FROM STDIN"
                ) as copy:
                    for _, nonce in batch:
                        copy.write_row(nonce)
        conn.execute("VACUUM ANALYZE events")
    return time.perf_counter() - started
