"""No forged callback gets in: a nonce signs exactly one body (the V3 re-split and the V2
body swap both fail), the URL verified is the one called, and junk is refused cheaply."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.callbacks import MAX_NAME_LENGTH, MAX_VALUE_LENGTH
from ledger.signatures import sign_v2, sign_v3, v3_signed_string
from tests.conftest import CALLBACK_URL, PLIVO_TOKEN, PUBLIC_URL, count_events

Client = AsyncTestClient[Litestar]
Params = list[tuple[str, str]]
UUID = "83876bdb-2033-4876-bfaf-0ff8693705af"
DELIVERED: Params = parse_qsl(
    "Status=delivered&From=13342031111&ParentMessageUUID=83876bdb-2033-4876-bfaf-0ff8693705af"
    "&TotalRate=0.0025&MCC=405&PartInfo=1+of+1&ErrorCode=&To=918553651111&Units=1"
    "&TotalAmount=0.0025&MNC=803&MessageUUID=83876bdb-2033-4876-bfaf-0ff8693705af",
    keep_blank_values=True,
)
NONCE = "captured-nonce"


def without(params: Params, *keys: str) -> Params:
    return [(key, value) for key, value in params if key not in keys]


#: Bodies with other keys and values that V3 signs exactly like DELIVERED, since it joins
#: names and values with nothing between them (each found by moving the boundaries).
RESPLITS: dict[str, Params] = {
    "an ErrorCode that swallows From, MCC and MNC": [
        ("ErrorCode", "From13342031111MCC405MNC803"),
        *without(DELIVERED, "ErrorCode", "From", "MCC", "MNC"),
    ],
    "Status=d and a key eliveredTo…": [
        *without(DELIVERED, "Status", "To", "TotalAmount", "TotalRate", "Units"),
        ("Status", "d"),
        ("eliveredTo918553651111TotalAmount0.0025TotalRate0.0025Units", "1"),
    ],
    "a PartInfo that swallows the Status": [
        ("PartInfo", "1 of 1Statusdelivered"),
        *without(DELIVERED, "PartInfo", "Status"),
    ],
}


def v3_request(params: Params, *, url: str = CALLBACK_URL, nonce: str = NONCE) -> dict[str, Any]:
    signature = sign_v3(method="POST", url=url, params=params, nonce=nonce, auth_token=PLIVO_TOKEN)
    return {
        "content": urlencode(params).encode(),
        "headers": {
            "content-type": "application/x-www-form-urlencoded",
            "x-plivo-signature-v3": signature,
            "x-plivo-signature-v3-nonce": nonce,
        },
    }


@pytest.mark.parametrize("body", RESPLITS.values(), ids=RESPLITS.keys())
def test_each_resplit_really_is_signed_exactly_like_the_original(body: Params) -> None:
    assert v3_signed_string("POST", CALLBACK_URL, body) == v3_signed_string(
        "POST", CALLBACK_URL, DELIVERED
    )


@pytest.mark.parametrize("body", RESPLITS.values(), ids=RESPLITS.keys())
async def test_a_captured_v3_signature_resplit_into_another_body_is_refused(
    client: Client, database_url: str, body: Params
) -> None:
    original = v3_request(DELIVERED)
    assert (await client.post("/plivo/status", **original)).status_code == 200

    # The captured signature and nonce, with a body whose signed string is the same.
    response = await client.post(
        "/plivo/status", content=urlencode(body).encode(), headers=original["headers"]
    )

    assert response.status_code == 403
    assert "nonce" in response.json()["detail"]
    assert await count_events(database_url) == 1


async def test_the_same_nonce_with_the_same_body_is_a_retry(
    client: Client, database_url: str
) -> None:
    first = await client.post("/plivo/status", **v3_request(DELIVERED))
    retry = await client.post("/plivo/status", **v3_request(DELIVERED))

    assert (first.json()["result"], retry.json()["result"]) == ("appended", "duplicate")
    assert retry.json()["position"] == first.json()["position"]
    assert await count_events(database_url) == 1


async def test_a_nonce_is_pinned_even_when_its_callback_was_a_duplicate(
    client: Client, database_url: str
) -> None:
    # A retry under a fresh nonce stores nothing new, but its nonce now signs that body only:
    # a re-split under it, with another dedup key (Status "d"), is refused too.
    assert (await client.post("/plivo/status", **v3_request(DELIVERED))).status_code == 200
    retried = v3_request(DELIVERED, nonce="retry-nonce")
    assert (await client.post("/plivo/status", **retried)).json()["result"] == "duplicate"

    resplit = RESPLITS["Status=d and a key eliveredTo…"]
    response = await client.post(
        "/plivo/status", content=urlencode(resplit).encode(), headers=retried["headers"]
    )

    assert response.status_code == 403
    assert await count_events(database_url) == 1


async def test_a_v2_nonce_replayed_with_another_body_is_refused(
    client: Client, database_url: str
) -> None:
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-plivo-signature-v2": sign_v2(url=CALLBACK_URL, nonce=NONCE, auth_token=PLIVO_TOKEN),
        "x-plivo-signature-v2-nonce": NONCE,
    }
    first = await client.post("/plivo/status", content=urlencode(DELIVERED), headers=headers)
    forged = [*without(DELIVERED, "Status"), ("Status", "failed")]
    replay = await client.post("/plivo/status", content=urlencode(forged), headers=headers)

    assert (first.status_code, replay.status_code) == (200, 403)
    assert await count_events(database_url) == 1


async def test_v3_and_v2_nonces_are_pinned_separately(client: Client, database_url: str) -> None:
    v2 = {
        "content-type": "application/x-www-form-urlencoded",
        "x-plivo-signature-v2": sign_v2(url=CALLBACK_URL, nonce=NONCE, auth_token=PLIVO_TOKEN),
        "x-plivo-signature-v2-nonce": NONCE,
    }
    other = [*without(DELIVERED, "Status"), ("Status", "sent")]
    assert (await client.post("/plivo/status", **v3_request(DELIVERED))).status_code == 200
    assert (
        await client.post("/plivo/status", content=urlencode(other), headers=v2)
    ).status_code == 200
    assert await count_events(database_url) == 2


@pytest.mark.parametrize("path", ["/plivo/status/", "/plivo/%73tatus"])
async def test_a_callback_signed_for_the_path_actually_called_is_accepted(
    client: Client, path: str
) -> None:
    response = await client.post(path, **v3_request(DELIVERED, url=f"{PUBLIC_URL}{path}"))

    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/plivo/status/", "/plivo/%73tatus"])
async def test_a_callback_signed_for_another_path_than_the_one_called_is_refused(
    client: Client, path: str, database_url: str
) -> None:
    response = await client.post(path, **v3_request(DELIVERED, url=CALLBACK_URL))

    assert response.status_code == 403
    assert await count_events(database_url) == 0


async def test_the_event_keeps_what_is_needed_to_recheck_its_signature(
    client: Client, auth: dict[str, str]
) -> None:
    url = f"{CALLBACK_URL}?tenant=a"
    await client.post("/plivo/status?tenant=a", **v3_request(DELIVERED, url=url))

    [event] = (await client.get(f"/v1/messages/{UUID}/events", headers=auth)).json()["events"]

    meta = event["meta"]
    assert (meta["signature"], meta["nonce"], meta["method"]) == ("v3", NONCE, "POST")
    assert meta["signed_url"] == url
    assert set(meta["signatures"]) == {"X-Plivo-Signature-V3", "X-Plivo-Signature-V3-Nonce"}
    assert PLIVO_TOKEN not in str(event)


async def test_more_fields_than_the_limit_are_refused_before_any_signature_work(
    client: Client, database_url: str
) -> None:
    padded = [*DELIVERED, *((f"Extra{n}", "") for n in range(128 - len(DELIVERED) + 1))]

    response = await client.post("/plivo/status", **v3_request(padded))

    assert response.status_code == 400
    assert "128 fields" in response.json()["detail"]
    assert await count_events(database_url) == 0


async def test_exactly_the_limit_of_fields_is_accepted(client: Client) -> None:
    padded = [*DELIVERED, *((f"Extra{n}", "") for n in range(128 - len(DELIVERED)))]

    assert (await client.post("/plivo/status", **v3_request(padded))).status_code == 200


@pytest.mark.parametrize(
    "field", [("x" * (MAX_NAME_LENGTH + 1), "1"), ("Note", "x" * (MAX_VALUE_LENGTH + 1))]
)
async def test_an_overlong_field_name_or_value_is_refused(
    client: Client, database_url: str, field: tuple[str, str]
) -> None:
    response = await client.post("/plivo/status", **v3_request([*DELIVERED, field]))

    assert response.status_code == 400
    assert await count_events(database_url) == 0


async def test_a_request_without_any_signature_header_is_refused_as_unsigned(
    client: Client,
) -> None:
    response = await client.post(
        "/plivo/status",
        content=urlencode(DELIVERED),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 403
    assert response.json()["detail"].startswith("missing X-Plivo-Signature-V3")
