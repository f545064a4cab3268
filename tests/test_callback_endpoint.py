"""POST/GET /plivo/status through the real ASGI app: signed callbacks in, events out."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.simulate import lifecycle, sign
from ledger.signatures import SIGNATURE_HEADERS, sign_v2, sign_v3
from tests.conftest import CALLBACK_URL, PLIVO_TOKEN, count_events

Client = AsyncTestClient[Litestar]
DELIVERED = (
    "Status=delivered&From=13342031111&ParentMessageUUID=83876bdb-2033-4876-bfaf-0ff8693705af"
    "&TotalRate=0.0025&MCC=405&PartInfo=1+of+1&ErrorCode=&To=918553651111&Units=1"
    "&TotalAmount=0.0025&MNC=803&MessageUUID=83876bdb-2033-4876-bfaf-0ff8693705af"
)
UUID = "83876bdb-2033-4876-bfaf-0ff8693705af"


def form(params: list[tuple[str, str]], **extra_headers: str) -> dict[str, Any]:
    """Request kwargs for a V3-signed form callback."""
    signed = sign(params, url=CALLBACK_URL, auth_token=PLIVO_TOKEN)
    return {"content": signed.body, "headers": {**signed.headers, **extra_headers}}


def delivered_params() -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(DELIVERED, keep_blank_values=True)


async def post(client: Client, params: list[tuple[str, str]]) -> Any:
    return await client.post("/plivo/status", **form(params))


async def test_a_signed_callback_is_appended_and_acknowledged(client: Client) -> None:
    response = await post(client, delivered_params())
    assert response.status_code == 200
    assert response.json()["result"] == "appended"
    assert isinstance(response.json()["position"], int)


async def test_the_acknowledgement_is_json_with_its_length(client: Client) -> None:
    response = await post(client, delivered_params())
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    assert set(response.json()) == {"result", "position"}


async def test_a_full_lifecycle_reads_back_through_the_audit_endpoint(
    client: Client, auth: dict[str, str]
) -> None:
    callbacks = lifecycle(random.Random(7), datetime(2026, 11, 23, 10, tzinfo=UTC), UUID)
    callbacks = [c for c in callbacks if dict(c)["Status"] != "failed"][:3]
    for params in callbacks:
        assert (await post(client, params)).status_code == 200

    response = await client.get(f"/v1/messages/{UUID}/events", headers=auth)
    assert response.status_code == 200
    trail = response.json()
    assert trail["message_uuid"] == UUID
    assert [e["status"] for e in trail["events"]] == [dict(c)["Status"] for c in callbacks]
    first = trail["events"][0]
    assert first["payload"] == dict(callbacks[0])
    assert first["meta"]["signature"] == "v3"
    assert first["meta"]["source"] == "plivo"
    assert {"position", "transaction_id", "event_type", "occurred_at", "recorded_at"} <= set(first)


async def test_a_retried_callback_is_answered_200_without_a_second_event(
    client: Client, settings: Any
) -> None:
    first = await post(client, delivered_params())
    retry = await post(client, delivered_params())
    assert retry.status_code == 200
    assert retry.json() == {"result": "duplicate", "position": first.json()["position"]}
    assert await count_events(settings.database_url) == 1


async def test_blank_values_and_unknown_fields_and_statuses_are_kept(
    client: Client, auth: dict[str, str]
) -> None:
    params = [*delivered_params(), ("BrandNewField", "x"), ("Status", "")]
    params = [
        (k, "carrier_hold" if k == "Status" else v) for k, v in params if (k, v) != ("Status", "")
    ]
    assert (await post(client, params)).status_code == 200
    [stored] = (await client.get(f"/v1/messages/{UUID}/events", headers=auth)).json()["events"]
    assert stored["status"] == "carrier_hold"
    assert stored["payload"]["ErrorCode"] == ""
    assert stored["payload"]["BrandNewField"] == "x"
    assert stored["payload"]["PartInfo"] == "1 of 1"


async def stored_payloads(client: Client, auth: dict[str, str]) -> list[Any]:
    """The payloads of the test message's events, read back through the audit trail."""
    response = await client.get(f"/v1/messages/{UUID}/events", headers=auth)
    assert response.status_code == 200
    return [event["payload"] for event in response.json()["events"]]


async def test_a_json_callback_is_stored_as_sent(client: Client, auth: dict[str, str]) -> None:
    params = delivered_params()
    nonce = "json-nonce"
    signature = sign_v3(
        method="POST", url=CALLBACK_URL, params=params, nonce=nonce, auth_token=PLIVO_TOKEN
    )
    response = await client.post(
        "/plivo/status",
        content=json.dumps(dict(params)).encode(),
        headers={
            "content-type": "application/json",
            "x-plivo-signature-v3": signature,
            "x-plivo-signature-v3-nonce": nonce,
        },
    )
    assert response.status_code == 200
    assert await stored_payloads(client, auth) == [dict(params)]


async def test_a_get_callback_with_query_parameters_is_stored_as_sent(
    client: Client, auth: dict[str, str]
) -> None:
    params = delivered_params()
    nonce = "get-nonce"
    signature = sign_v3(
        method="GET", url=CALLBACK_URL, params=params, nonce=nonce, auth_token=PLIVO_TOKEN
    )
    response = await client.get(
        f"/plivo/status?{urlencode(params)}",
        headers={"x-plivo-signature-v3": signature, "x-plivo-signature-v3-nonce": nonce},
    )
    assert response.status_code == 200
    assert await stored_payloads(client, auth) == [dict(params)]


async def test_a_v2_signed_callback_is_accepted(client: Client) -> None:
    response = await client.post(
        "/plivo/status",
        content=DELIVERED.encode(),
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "x-plivo-signature-v2": sign_v2(
                url=CALLBACK_URL, nonce="v2-nonce", auth_token=PLIVO_TOKEN
            ),
            "x-plivo-signature-v2-nonce": "v2-nonce",
        },
    )
    assert response.status_code == 200
    assert response.json()["result"] == "appended"


async def test_a_v2_nonce_replayed_with_another_body_is_forbidden(
    client: Client, settings: Any
) -> None:
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-plivo-signature-v2": sign_v2(url=CALLBACK_URL, nonce="captured", auth_token=PLIVO_TOKEN),
        "x-plivo-signature-v2-nonce": "captured",
    }
    assert (
        await client.post("/plivo/status", content=DELIVERED.encode(), headers=headers)
    ).status_code == 200
    forged = DELIVERED.replace("Status=delivered", "Status=failed")
    response = await client.post("/plivo/status", content=forged.encode(), headers=headers)
    assert response.status_code == 403
    assert "nonce" in response.json()["detail"]
    assert await count_events(settings.database_url) == 1


def _refusals() -> list[Any]:
    good = delivered_params()
    no_uuid = [(k, v) for k, v in good if k != "MessageUUID"]
    bad_uuid = [(k, "not-a-uuid" if k == "MessageUUID" else v) for k, v in good]
    signed = form(good)
    return [
        pytest.param(
            {
                "content": DELIVERED.encode(),
                "headers": {"content-type": "application/x-www-form-urlencoded"},
            },
            403,
            id="unsigned",
        ),
        pytest.param(
            {
                "content": signed["content"],
                "headers": {**signed["headers"], "x-plivo-signature-v3": "AAAA"},
            },
            403,
            id="forged-signature",
        ),
        pytest.param(
            {
                "content": signed["content"].replace(b"delivered", b"failed"),
                "headers": signed["headers"],
            },
            403,
            id="tampered-body",
        ),
        pytest.param(form(no_uuid), 400, id="missing-message-uuid"),
        pytest.param(form(bad_uuid), 400, id="malformed-message-uuid"),
        pytest.param(
            {"content": b"\xff\xfe=\xff", "headers": signed["headers"]}, 400, id="invalid-utf8"
        ),
        pytest.param(
            {
                "content": signed["content"],
                "headers": {**signed["headers"], "content-type": "text/plain"},
            },
            415,
            id="wrong-content-type",
        ),
        pytest.param(
            {"content": b"a=" + b"x" * (70 * 1024), "headers": signed["headers"]},
            413,
            id="too-large",
        ),
    ]


@pytest.mark.parametrize(("request_kwargs", "status"), _refusals())
async def test_a_refused_callback_gets_a_problem_and_leaves_no_event(
    client: Client, settings: Any, request_kwargs: dict[str, Any], status: int
) -> None:
    response = await client.post("/plivo/status", **request_kwargs)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == status
    assert response.json()["detail"]
    assert await count_events(settings.database_url) == 0


async def test_a_missing_message_uuid_names_the_field(client: Client) -> None:
    params = [(k, v) for k, v in delivered_params() if k != "MessageUUID"]
    response = await post(client, params)
    assert response.json()["field"] == "MessageUUID"


async def test_two_hundred_concurrent_callbacks_all_land_exactly_once(
    client: Client, settings: Any
) -> None:
    rng = random.Random(1)
    start = datetime(2026, 11, 23, tzinfo=UTC)
    callbacks = [lifecycle(rng, start)[0] for _ in range(200)]
    responses = await asyncio.gather(*(post(client, c) for c in callbacks + callbacks))
    assert {r.status_code for r in responses} == {200}
    assert sorted(r.json()["result"] for r in responses).count("appended") == 200
    assert await count_events(settings.database_url) == 200


async def test_the_audit_trail_needs_a_valid_token(client: Client) -> None:
    assert (await post(client, delivered_params())).status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        response = await client.get(f"/v1/messages/{UUID}/events", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_the_audit_trail_of_an_unknown_message_is_404(
    client: Client, auth: dict[str, str]
) -> None:
    response = await client.get(f"/v1/messages/{UUID}/events", headers=auth)
    assert response.status_code == 404
    assert UUID in response.json()["detail"]


async def test_the_audit_trail_of_a_malformed_uuid_is_400(
    client: Client, auth: dict[str, str]
) -> None:
    response = await client.get("/v1/messages/not-a-uuid/events", headers=auth)
    assert response.status_code == 400
    assert response.json()["field"] == "message_uuid"


# --- the route's OpenAPI description --------------------------------------------------------


async def callback_operations(client: Client) -> dict[str, Any]:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    operations: dict[str, Any] = response.json()["paths"]["/plivo/status"]
    return operations


async def test_the_openapi_post_callback_documents_the_form_fields_plivo_sends(
    client_without_projectors: Client,
) -> None:
    post = (await callback_operations(client_without_projectors))["post"]

    content = post["requestBody"]["content"]
    assert set(content) == {"application/x-www-form-urlencoded", "application/json"}
    fields = content["application/x-www-form-urlencoded"]["schema"]
    assert {"MessageUUID", "Status", "ErrorCode", "Sequence", "DeliveryReportTime"} <= set(
        fields["properties"]
    )
    assert fields["required"] == ["MessageUUID"]


@pytest.mark.parametrize("method", ["post", "get"])
async def test_the_openapi_callback_documents_its_acknowledgement(
    client_without_projectors: Client, method: str
) -> None:
    operation = (await callback_operations(client_without_projectors))[method]

    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/CallbackAccepted")


@pytest.mark.parametrize("method", ["post", "get"])
async def test_the_openapi_callback_documents_the_signature_headers(
    client_without_projectors: Client, method: str
) -> None:
    operation = (await callback_operations(client_without_projectors))[method]

    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    # Exactly the headers the verifier reads, V3 and V2 with their -Ma- and -Nonce headers.
    assert {name.lower() for name in headers} == SIGNATURE_HEADERS
    assert len(headers) == 6


async def test_the_openapi_get_callback_documents_the_fields_as_query_parameters(
    client_without_projectors: Client,
) -> None:
    get = (await callback_operations(client_without_projectors))["get"]

    query = {p["name"]: p for p in get["parameters"] if p["in"] == "query"}
    assert {"MessageUUID", "Status", "ErrorCode", "Sequence"} <= set(query)
    assert query["MessageUUID"]["required"] is True
    assert "requestBody" not in get
