"""Errors are RFC 9457 problem details, and the OpenAPI document says so, route by route."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.problems import PROBLEM_JSON
from ledger.settings import Settings

Client = AsyncTestClient[Litestar]
MESSAGE = "5b1f3c7e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}
DAY = {"start": "2026-11-20", "end": "2026-11-20"}

#: The error statuses each route of the read API can answer, and so must document.
ROUTE_ERRORS = {
    ("/v1/messages", "get"): {400, 401, 503},
    ("/v1/messages/{message_uuid}", "get"): {400, 401, 404, 503},
    ("/v1/messages/{message_uuid}/events", "get"): {400, 401, 404, 503},
    ("/v1/metrics/daily", "get"): {400, 401, 503},
    ("/v1/seals/head", "get"): {401, 404, 503},
    ("/v1/seals", "get"): {400, 401, 503},
    ("/plivo/status", "get"): {400, 403, 413, 415, 503},
    ("/plivo/status", "post"): {400, 403, 413, 415, 503},
}


async def openapi(client: Client) -> Any:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()


def error_responses(document: Any) -> dict[tuple[str, str, int], Any]:
    """Every documented 4xx/5xx answer, by path, method and status."""
    return {
        (path, method, int(status)): answer
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for status, answer in operation["responses"].items()
        if int(status) >= 400
    }


async def test_a_problem_has_the_rfc_9457_members(client: Client, auth: dict[str, str]) -> None:
    response = await client.get(f"/v1/messages/{MESSAGE}", headers=auth)
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": body["detail"],
        "instance": f"/v1/messages/{MESSAGE}",
    }
    assert MESSAGE in body["detail"]


async def test_an_unknown_route_is_answered_with_a_problem(client: Client) -> None:
    response = await client.get("/v2/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_JSON
    assert "/schema" in response.json()["detail"]


async def test_an_invalid_format_names_the_format_parameter(
    client: Client, auth: dict[str, str]
) -> None:
    response = await client.get("/v1/metrics/daily", params={**DAY, "format": "xml"}, headers=auth)
    assert response.status_code == 400
    problem = response.json()
    assert problem["field"] == "format"
    assert "'format'" in problem["detail"]
    assert "output" not in response.text


async def test_an_oversized_body_is_refused_with_the_limit_stated(
    client: Client, settings: Settings
) -> None:
    response = await client.post(
        "/plivo/status",
        content=b"a=" + b"x" * settings.max_body_bytes,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert f"{settings.max_body_bytes}-byte limit (LEDGER_MAX_BODY_BYTES)" in detail


async def test_every_documented_error_is_problem_json(client: Client) -> None:
    errors = error_responses(await openapi(client))
    assert errors
    for (path, method, status), answer in errors.items():
        if path == "/ready":
            continue  # its 503 is the readiness report itself
        assert answer["content"] == {PROBLEM_JSON: {"schema": PROBLEM_REF}}, (path, method, status)


@pytest.mark.parametrize(("route", "statuses"), ROUTE_ERRORS.items(), ids=str)
async def test_each_route_documents_the_problems_it_answers(
    client: Client, route: tuple[str, str], statuses: set[int]
) -> None:
    documented = {
        status for (*key, status) in error_responses(await openapi(client)) if tuple(key) == route
    }
    assert documented == statuses


async def test_the_problem_schema_has_the_members_that_are_sent(client: Client) -> None:
    schema = (await openapi(client))["components"]["schemas"]["ProblemDetails"]
    assert set(schema["required"]) == {"type", "title", "status", "detail", "instance"}
    assert set(schema["properties"]) == {*schema["required"], "field", "errors"}


@pytest.mark.parametrize(
    ("method", "path", "params", "authorised"),
    [
        ("GET", "/v1/messages", {}, False),
        ("GET", "/v1/messages", {"cursor": "forged"}, True),
        ("GET", "/v1/messages", {"limit": "0"}, True),
        ("GET", f"/v1/messages/{MESSAGE}", {}, True),
        ("GET", "/v1/messages/not-a-uuid/events", {}, True),
        ("GET", "/v1/metrics/daily", {**DAY, "format": "xml"}, True),
    ],
    ids=["401", "400-handler", "400-validation", "404", "400-path", "400-format"],
)
async def test_every_problem_sent_has_only_documented_members(
    client: Client,
    auth: dict[str, str],
    method: str,
    path: str,
    params: dict[str, str],
    authorised: bool,
) -> None:
    schema = (await openapi(client))["components"]["schemas"]["ProblemDetails"]
    response = await client.request(method, path, params=params, headers=auth if authorised else {})
    assert response.status_code >= 400
    body = response.json()
    assert set(schema["required"]) <= set(body) <= set(schema["properties"])


async def test_ready_documents_its_503_with_the_readiness_report(client: Client) -> None:
    responses = (await openapi(client))["paths"]["/ready"]["get"]["responses"]
    readiness = {"application/json": {"schema": {"$ref": "#/components/schemas/Readiness"}}}
    assert responses["503"]["content"] == readiness
    assert responses["200"]["content"] == readiness
