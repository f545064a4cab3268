"""The OpenAPI description of what Plivo sends to ``/plivo/status``: its fields and headers.

The route reads its parameters itself (order, repeats and blanks kept, signature first), so
Litestar cannot infer them from the handler: :class:`CallbackOperation` adds them to the
generated operation (``operation_class``), as Plivo documents them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.enums import ParamType
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Parameter, Schema
from litestar.openapi.spec import RequestBody as OpenAPIRequestBody

#: Every field of an outbound SMS/MMS/WhatsApp status callback, with what it holds. Every
#: value is a string; any of them but MessageUUID may be blank or absent.
PLIVO_FIELDS: dict[str, str] = {
    "MessageUUID": "UUID of the message this status is about (required).",
    "Status": "queued, sent, delivered, undelivered, failed, read (WhatsApp), rejected; "
    "any other status is stored too.",
    "ErrorCode": "Plivo's error code for failed or undelivered messages (blank or 000 on "
    "success), e.g. 30 spam detected, 420 expired while queued.",
    "From": "Sender number or alphanumeric sender id.",
    "To": "Destination number.",
    "Type": "sms, mms or whatsapp.",
    "Units": "Segments of the message (an integer).",
    "TotalRate": "Rate per unit (a decimal).",
    "TotalAmount": "TotalRate × Units (a decimal).",
    "MCC": "Mobile country code of the destination (on sent and later statuses).",
    "MNC": "Mobile network code of the destination (on sent and later statuses).",
    "Sequence": "Order in which Plivo generated this message's callbacks (an integer).",
    "MessageTime": "When the message was created, e.g. 2026-11-23 10:04:05.123456 (no offset; "
    "read in LEDGER_PLIVO_TIMEZONE).",
    "QueuedTime": "When the message was queued.",
    "SentTime": "When the message was sent to the carrier.",
    "DeliveryReportTime": "When the carrier's delivery report arrived.",
    "ParentMessageUUID": "Reserved; real payloads repeat MessageUUID.",
    "PartInfo": "Reserved; real payloads say 1 of 1.",
    "PowerpackUUID": "Powerpack that sent the message (blank when none).",
    "requester_ip": "Address of the client that sent the message (lower case, as sent).",
    "ConversationID": "WhatsApp conversation id.",
    "ConversationOrigin": "WhatsApp conversation origin.",
    "ConversationExpirationTimestamp": "WhatsApp conversation expiry (Unix time).",
}

#: The signature headers Plivo sends (one family, V3 or V2), with what they carry.
SIGNATURE_HEADER_DOCS: dict[str, str] = {
    "X-Plivo-Signature-V3": "base64 HMAC-SHA256, keyed with the (sub)account's auth token, of "
    "the URL as called, the sorted parameters and the nonce; several comma-separated "
    "signatures during token rotation, any one matching is enough.",
    "X-Plivo-Signature-Ma-V3": "The same, keyed with the main account's auth token.",
    "X-Plivo-Signature-V3-Nonce": "The nonce the V3 signatures were made with; it signs exactly "
    "one callback body.",
    "X-Plivo-Signature-V2": "base64 HMAC-SHA256 of scheme://host[:port]/path + nonce, keyed "
    "with the (sub)account's auth token (checked only when no V3 header is sent).",
    "X-Plivo-Signature-Ma-V2": "The same, keyed with the main account's auth token.",
    "X-Plivo-Signature-V2-Nonce": "The nonce the V2 signatures were made with; it signs exactly "
    "one callback body.",
}

_STRING = Schema(type=OpenAPIType.STRING)

_FIELDS = Schema(
    type=OpenAPIType.OBJECT,
    description="The callback's fields, as Plivo sends them. Unknown fields are kept; a field "
    "given twice is kept twice.",
    properties={
        name: Schema(type=OpenAPIType.STRING, description=text)
        for name, text in PLIVO_FIELDS.items()
    },
    required=["MessageUUID"],
    additional_properties=_STRING,
)

_HEADERS = [
    Parameter(
        name=name,
        param_in=ParamType.HEADER,
        schema=_STRING,
        required=False,
        description=f"{text} A callback must carry the V3 or the V2 headers.",
    )
    for name, text in SIGNATURE_HEADER_DOCS.items()
]

_QUERY = [
    Parameter(
        name=name,
        param_in=ParamType.QUERY,
        schema=_STRING,
        required=name == "MessageUUID",
        description=text,
    )
    for name, text in PLIVO_FIELDS.items()
]

_BODY = OpenAPIRequestBody(
    description="A POST callback's fields: form-encoded, as Plivo sends them, or a JSON object "
    "of the same fields (strings, numbers, booleans, null or arrays of those).",
    required=True,
    content={
        "application/x-www-form-urlencoded": OpenAPIMediaType(schema=_FIELDS),
        "application/json": OpenAPIMediaType(schema=_FIELDS),
    },
)


POST_OPERATION_ID = "receivePlivoStatus"
GET_OPERATION_ID = "receivePlivoStatusByGet"


def operation_id(handler: HTTPRouteHandler, method: str, path: list[Any]) -> str:
    """The callback route's operation ids, one per method (what tells them apart below)."""
    return GET_OPERATION_ID if method == "GET" else POST_OPERATION_ID


@dataclass
class CallbackOperation(Operation):
    """The callback route's operation, with Plivo's fields (the body of a POST, the query of
    a GET) and the signature headers."""

    def __post_init__(self) -> None:
        is_get = self.operation_id == GET_OPERATION_ID
        self.parameters = [*_HEADERS, *(_QUERY if is_get else [])]
        self.request_body = None if is_get else _BODY
