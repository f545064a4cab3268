"""Plivo status callbacks: decode a request's parameters and turn them into a ledger event."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, tzinfo
from typing import NoReturn
from urllib.parse import unquote
from uuid import UUID

import msgspec

from ledger.events import STATUS_REPORTED, EventMeta, NewEvent, Payload

#: Parameters as received: (name, value) pairs in order, repeated names kept.
Params = tuple[tuple[str, str], ...]


class CallbackError(Exception):
    """A callback that cannot be read. ``detail`` says what is wrong and what is expected;
    ``field`` names the offending parameter when there is one."""

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
# At most 18 digits: always fits a bigint, and never trips int()'s long-string guard.
_SEQUENCE = re.compile(r"[0-9]{1,18}")
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[ T+]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?"
)

_DELIVERY_REPORT_TIME = "DeliveryReportTime"
_SENT_TIME = "SentTime"
_QUEUED_TIME = "QueuedTime"
_MESSAGE_TIME = "MessageTime"
#: The timestamp that says when each status happened, best first.
_STATUS_TIMES: dict[str, tuple[str, ...]] = {
    "delivered": (_DELIVERY_REPORT_TIME,),
    "undelivered": (_DELIVERY_REPORT_TIME,),
    "read": (_DELIVERY_REPORT_TIME,),
    "sent": (_SENT_TIME,),
    "queued": (_QUEUED_TIME,),
    "failed": (_DELIVERY_REPORT_TIME, _SENT_TIME, _QUEUED_TIME),
    "rejected": (_DELIVERY_REPORT_TIME, _SENT_TIME, _QUEUED_TIME),
}
_ANY_TIME = (_DELIVERY_REPORT_TIME, _SENT_TIME, _QUEUED_TIME, _MESSAGE_TIME)

#: The most fields a callback may carry (``LEDGER_MAX_FIELDS``); Plivo sends about 20.
DEFAULT_MAX_FIELDS = 128
#: The longest field name and value accepted. Plivo's longest are timestamps, UUIDs and IP
#: addresses; these bounds only keep junk from costing parse, signature and storage work.
MAX_NAME_LENGTH = 256
MAX_VALUE_LENGTH = 4096

# Versioned and kind-tagged, so that the two ways of deriving a key can never collide and a
# future change of derivation cannot clash with keys already stored.
_STATUS_KEY_TAG = b"v1\x00status\x00"
_PAYLOAD_KEY_TAG = b"v1\x00payload\x00"


def parse_form(body: bytes, *, max_fields: int = DEFAULT_MAX_FIELDS) -> Params:
    """Decode an ``application/x-www-form-urlencoded`` body, keeping order, repeats and blanks.

    Raises :class:`CallbackError` unless the body is UTF-8 (raw and percent-encoded), holds at
    most ``max_fields`` fields (counted before any decoding, so junk costs almost nothing) and
    no name or value longer than :data:`MAX_NAME_LENGTH` / :data:`MAX_VALUE_LENGTH`.
    """
    _refuse_too_many(body.count(b"&") + 1, max_fields, "the body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise CallbackError(
            "the body is not valid UTF-8: send application/x-www-form-urlencoded UTF-8 text"
        ) from None
    return _parse_urlencoded(text, "the body")


def parse_query(query_string: str, *, max_fields: int = DEFAULT_MAX_FIELDS) -> Params:
    """Decode a (percent-encoded) query string the way :func:`parse_form` decodes a body."""
    _refuse_too_many(query_string.count("&") + 1, max_fields, "the query string")
    return _parse_urlencoded(query_string, "the query string")


def parse_json(body: bytes, *, max_fields: int = DEFAULT_MAX_FIELDS) -> Params:
    """Decode a JSON object into parameters, as if its fields had been form-encoded.

    Strings are kept verbatim, numbers and booleans become their JSON text, null becomes
    ``""``, an array of those becomes the key repeated once per element (an empty array drops
    the key) and a key given twice is kept twice. Raises :class:`CallbackError` for anything
    else: invalid UTF-8 or JSON, a top level that is not an object, nested objects or arrays.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise CallbackError("the body is not valid UTF-8: send a UTF-8 JSON object") from None
    try:
        # Numbers are kept as the text they were sent as: 1.10 must not become 1.1.
        document = json.loads(
            text,
            object_pairs_hook=_JSONObject,
            parse_int=str,
            parse_float=str,
            parse_constant=_reject_constant,
        )
    except json.JSONDecodeError as exc:
        raise CallbackError(
            f"the body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            "send a JSON object of field names to values"
        ) from None
    except RecursionError:
        raise CallbackError(
            "the JSON body is nested too deeply: send a flat object of field names to values"
        ) from None
    if not isinstance(document, _JSONObject):
        raise CallbackError(
            "the JSON body is not an object: send a JSON object of field names to values"
        )
    pairs: list[tuple[str, str]] = []
    for key, value in document.pairs:
        if isinstance(value, list):
            pairs.extend((key, _json_scalar(key, item)) for item in value)
        else:
            pairs.append((key, _json_scalar(key, value)))
    _refuse_too_many(len(pairs), max_fields, "the JSON body")
    checked = _checked(pairs, "the JSON body")
    # Only JSON can carry an unpaired surrogate (as a \ud800 escape): strict UTF-8, which
    # forms and query strings are decoded with, refuses the bytes of one.
    for pair in checked:
        for text in pair:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise CallbackError(
                    "the JSON body contains an unpaired surrogate escape: send valid Unicode text"
                ) from None
    return checked


def payload_of(params: Params) -> Payload:
    """The parameters as a payload: one value stays a string, repeated keys keep a list in order."""
    single: Payload = dict(params)
    if len(single) == len(params):  # no key repeated, as in every callback Plivo sends
        return single
    payload: Payload = {}
    for key, value in params:
        current = payload.get(key)
        if current is None:
            payload[key] = value
        elif isinstance(current, list):
            current.append(value)
        else:
            payload[key] = [current, value]
    return payload


def to_event(params: Params, *, meta: EventMeta, timestamps_tz: tzinfo) -> NewEvent:
    """Turn a status callback's parameters into a ``plivo.status_reported`` event.

    ``timestamps_tz`` is the zone Plivo's offset-less timestamps are read in. Raises
    :class:`CallbackError` when ``MessageUUID`` is missing, not a UUID or contradictory, or
    when ``Status`` is given twice with different values. Unknown fields and statuses are kept.
    """
    payload = payload_of(params)
    message_uuid = _message_uuid(payload)
    status = _status(payload)
    sequence = _sequence(payload)
    if sequence is not None:
        # msgspec writes a UUID as its canonical text, str(message_uuid), without making it.
        material = _STATUS_KEY_TAG + msgspec.json.encode([message_uuid, status, sequence])
    else:
        material = _PAYLOAD_KEY_TAG + msgspec.json.encode(sorted(params))
    return NewEvent(
        message_uuid=message_uuid,
        event_type=STATUS_REPORTED,
        status=status,
        occurred_at=_occurred_at(payload, status, timestamps_tz),
        dedup_key=hashlib.sha256(material).digest(),
        payload=payload,
        meta=meta,
    )


class _JSONObject:
    """A decoded JSON object, as its (key, value) pairs, so repeated keys survive."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        self.pairs = pairs


def _reject_constant(name: str) -> NoReturn:
    raise CallbackError(f"the JSON body contains {name}, which is not a JSON number")


def _json_scalar(key: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    kind = "an object" if isinstance(value, _JSONObject) else "a nested array"
    raise CallbackError(
        f"{key} holds {kind}: values must be strings, numbers, booleans, null or arrays of those",
        field=key,
    )


def _parse_urlencoded(text: str, where: str) -> Params:
    """What ``urllib.parse.parse_qsl(text, keep_blank_values=True, errors="strict")`` returns
    (a test holds them equal), without its per-field coercion and unquoting calls: most
    fields hold neither ``+`` nor ``%``, and are taken as they are."""
    pairs: list[tuple[str, str]] = []
    try:
        for field in text.split("&"):
            if not field:
                continue
            name, _, value = field.partition("=")
            if "+" in field:
                name, value = name.replace("+", " "), value.replace("+", " ")
            if "%" in field:
                name, value = unquote(name, errors="strict"), unquote(value, errors="strict")
            pairs.append((name, value))
    except UnicodeDecodeError:
        raise CallbackError(
            f"{where} has percent-encoded bytes that are not valid UTF-8: encode text as UTF-8"
        ) from None
    return _checked(pairs, where)


def _refuse_too_many(fields: int, max_fields: int, where: str) -> None:
    if fields > max_fields:
        raise CallbackError(
            f"{where} holds more than {max_fields} fields: a Plivo callback carries about 20 "
            "(LEDGER_MAX_FIELDS sets the limit)"
        )


def _checked(pairs: list[tuple[str, str]], where: str) -> Params:
    # Payloads are stored as PostgreSQL jsonb, which refuses NUL (and unpaired surrogates, see
    # parse_json). Refusing them here answers 400 instead of failing the insert and making
    # Plivo retry. One pass over the pairs.
    for key, value in pairs:
        if len(key) > MAX_NAME_LENGTH or len(value) > MAX_VALUE_LENGTH:
            raise CallbackError(
                f"{where} has a field name over {MAX_NAME_LENGTH} or a value over "
                f"{MAX_VALUE_LENGTH} characters: no Plivo callback field is that long",
                field=key[:64],
            )
        if "\x00" in key or "\x00" in value:
            raise CallbackError(f"{where} contains a NUL character, which is never valid here")
    return tuple(pairs)


def _values(payload: Payload, key: str) -> list[str]:
    value = payload.get(key)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _single(payload: Payload, key: str) -> str | None:
    """The field's one value, or None when it is absent, blank or contradicts itself."""
    distinct = {value.strip() for value in _values(payload, key)} - {""}
    return distinct.pop() if len(distinct) == 1 else None


def _message_uuid(payload: Payload) -> UUID:
    values = [value.strip() for value in _values(payload, "MessageUUID")]
    if not any(values):
        raise CallbackError(
            "MessageUUID is missing: expected the UUID of the message this status is about",
            field="MessageUUID",
        )
    uuids: set[UUID] = set()
    for value in values:
        if _UUID.fullmatch(value) is None:
            raise CallbackError(
                f"MessageUUID {value[:64]!r} is not a UUID: expected 32 hexadecimal digits "
                "grouped 8-4-4-4-12, e.g. 83876bdb-2033-4876-bfaf-0ff8693705af",
                field="MessageUUID",
            )
        uuids.add(UUID(value))
    if len(uuids) > 1:
        raise CallbackError(
            "MessageUUID is given several times with different values: expected one message",
            field="MessageUUID",
        )
    return uuids.pop()


def _status(payload: Payload) -> str | None:
    statuses = {value.strip().lower() for value in _values(payload, "Status")} - {""}
    if len(statuses) > 1:
        raise CallbackError(
            "Status is given several times with different values: expected one status",
            field="Status",
        )
    return statuses.pop() if statuses else None


def _sequence(payload: Payload) -> int | None:
    value = _single(payload, "Sequence")
    if value is None or _SEQUENCE.fullmatch(value) is None:
        return None
    return int(value)


def _timestamp(payload: Payload, key: str, zone: tzinfo) -> datetime | None:
    value = _single(payload, key)
    match = _TIMESTAMP.fullmatch(value) if value is not None else None
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction = match.groups()
    try:
        local = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "0").ljust(6, "0")),
            tzinfo=zone,
        )
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        # An impossible date (month 13) or one pushed out of range by the zone: not a time.
        return None


def _occurred_at(payload: Payload, status: str | None, zone: tzinfo) -> datetime | None:
    for key in _STATUS_TIMES.get(status or "", ()):
        if (moment := _timestamp(payload, key, zone)) is not None:
            return moment
    moments = [m for key in _ANY_TIME if (m := _timestamp(payload, key, zone)) is not None]
    return max(moments, default=None)
