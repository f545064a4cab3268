"""Events the service appends itself (expiry verdicts, later sends), and how they are proven.

Plivo's events carry Plivo's signature; the service's own carry ``meta.mac``: an HMAC-SHA256,
under the service's system key, of the event's canonical document (everything the service
chose: message, type, status, event time, dedup key, payload and meta without the MAC; not
what the database assigns). So a row inserted by someone with database access but without
the key cannot pass for a system event in ``ledger verify``.

The key is ``LEDGER_SYSTEM_KEY``, or one generated once in the data directory. Every process
that appends system events (API workers, projector processes) must share it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import msgspec

from ledger.canonical import DOCUMENT_VERSION, jcs, timestamp
from ledger.events import NewEvent, Payload
from ledger.local_secrets import generated_secret
from ledger.settings import Settings

SYSTEM_KEY_FILE: Final = "system-key"


def system_key(settings: Settings) -> bytes:
    """The key system events are signed with: ``LEDGER_SYSTEM_KEY`` or the data dir's."""
    if settings.system_key:
        return settings.system_key.encode()
    key, _ = generated_secret(settings.data_dir / SYSTEM_KEY_FILE)
    return key.encode()


def signed(event: NewEvent, key: bytes) -> NewEvent:
    """``event`` with its MAC in ``meta.mac``."""
    meta = msgspec.structs.replace(event.meta, mac=None)
    mac = _mac(
        key,
        message_uuid=event.message_uuid,
        event_type=event.event_type,
        status=event.status,
        occurred_at=event.occurred_at,
        dedup_key=event.dedup_key,
        payload=event.payload,
        meta=msgspec.to_builtins(meta),
    )
    return msgspec.structs.replace(event, meta=msgspec.structs.replace(meta, mac=mac))


def mac_matches(
    keys: tuple[bytes, ...],
    *,
    message_uuid: UUID,
    event_type: str,
    status: str | None,
    occurred_at: datetime | None,
    dedup_key: bytes,
    payload: Payload,
    meta: dict[str, Any],
) -> bool:
    """Whether a stored system event's ``meta.mac`` was made with one of ``keys``."""
    claimed = meta.get("mac")
    if not isinstance(claimed, str):
        return False
    unsigned = {name: value for name, value in meta.items() if name != "mac"}
    for key in keys:
        expected = _mac(
            key,
            message_uuid=message_uuid,
            event_type=event_type,
            status=status,
            occurred_at=occurred_at,
            dedup_key=dedup_key,
            payload=payload,
            meta=unsigned,
        )
        if hmac.compare_digest(expected.encode(), claimed.encode()):
            return True
    return False


def _mac(
    key: bytes,
    *,
    message_uuid: UUID,
    event_type: str,
    status: str | None,
    occurred_at: datetime | None,
    dedup_key: bytes,
    payload: Payload,
    meta: Any,
) -> str:
    document = {
        "v": DOCUMENT_VERSION,
        "kind": "system-event",
        "message_uuid": str(message_uuid),
        "event_type": event_type,
        "status": status,
        "occurred_at": timestamp(occurred_at),
        "dedup_key": base64.b64encode(dedup_key).decode(),
        "payload": payload,
        "meta": meta,
    }
    digest = hmac.new(key, jcs(document), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()
