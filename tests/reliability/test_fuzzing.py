"""Fuzzing: generated input never makes the service fail.

* schemathesis, from the service's own OpenAPI document (``/schema/openapi.json``), against
  the running server: every operation, with inputs that fit the schema and inputs that do
  not, with and without a read-API token. Never a 5xx; every 4xx is problem details; nothing
  is appended (nothing it sends can carry a valid Plivo signature).
* hypothesis over HTTP: callbacks with generated fields and values, correctly signed, are
  either stored exactly as sent (200) or refused as malformed (400), never anything else.
* hypothesis in-process: the callback parsers and the signature check raise nothing but
  ``CallbackError`` and ``SignatureError``, whatever bytes, parameters and headers they get.

Example counts are kept small for CI; ``LEDGER_RELIABILITY_SCALE=full`` multiplies them.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import string
from collections.abc import Callable
from datetime import UTC
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from ledger.callbacks import CallbackError, parse_form, parse_json, parse_query, to_event
from ledger.events import EventMeta
from ledger.signatures import SignatureError, sign_v3, verify_signature
from tests.conftest import CALLBACK_URL, PLIVO_TOKEN
from tests.reliability.conftest import (
    AUTHORIZED,
    PROBLEM_JSON,
    LedgerServer,
    ServerFleet,
    remember_numbers,
)

pytestmark = pytest.mark.reliability

SCALE = 10 if os.environ.get("LEDGER_RELIABILITY_SCALE", "").lower() == "full" else 1


def fuzz(examples: int) -> settings:
    """Hypothesis settings for a fuzz run of ``examples`` (times the scale) examples."""
    return settings(
        max_examples=examples * SCALE, deadline=None, suppress_health_check=list(HealthCheck)
    )


#: Text PostgreSQL and UTF-8 can carry (no surrogates); NUL included: it must be refused.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
FIELD_NAMES = st.one_of(
    st.sampled_from(
        [
            "MessageUUID",
            "Status",
            "Sequence",
            "ErrorCode",
            "From",
            "To",
            "Units",
            "TotalAmount",
            "MessageTime",
            "QueuedTime",
            "SentTime",
            "DeliveryReportTime",
            "Type",
        ]
    ),
    TEXT,
)
UUIDS = st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), TEXT)


@pytest.fixture(scope="module")
def server(module_servers: ServerFleet, module_databases: Callable[[], str]) -> LedgerServer:
    return module_servers.create(module_databases(), name="fuzzing")


def event_total(server: LedgerServer) -> int:
    with psycopg.connect(server.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    assert row is not None
    return int(row[0])


def assert_no_failure(status: int, content_type: str, body: bytes, what: str) -> None:
    assert status < 500, f"{what} answered {status}: {body[:500]!r}"
    if status >= 400:
        assert content_type.startswith(PROBLEM_JSON), f"{what} answered {status} {content_type}"


def test_schema_generated_requests_never_fail_the_server(server: LedgerServer) -> None:
    schema = schemathesis.openapi.from_url(f"{server.base_url}/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    # A valid request to the live feed never ends (it is a stream): fuzzing cannot wait for
    # its answer. Its refusals are tested in test_stream.py.
    operations = [op for op in operations if op.path != "/v1/stream"]
    assert any(op.path.startswith("/v1/") for op in operations)
    assert any(op.path == "/plivo/status" for op in operations)
    cases = st.sampled_from(operations).flatmap(
        lambda op: st.one_of(
            op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)
        )
    )
    before = event_total(server)

    @fuzz(150)
    @given(case=cases, authorised=st.booleans())
    def check(case: Any, authorised: bool) -> None:
        if authorised:
            case.headers = {**(case.headers or {}), **AUTHORIZED}
        response = case.call(base_url=server.base_url, timeout=30)
        assert_no_failure(
            response.status_code,
            ", ".join(response.headers.get("content-type", [])),
            response.content,
            f"{case.method} {case.path} {case.path_parameters} {case.query}",
        )

    check()
    assert event_total(server) == before


@st.composite
def callback_params(draw: st.DrawFn) -> list[tuple[str, str]]:
    """A callback's fields: mostly plausible, with generated names, values and repeats."""
    params = [("MessageUUID", draw(UUIDS))]
    params += draw(
        st.lists(
            st.tuples(
                FIELD_NAMES,
                st.one_of(
                    TEXT,
                    st.integers(-(10**30), 10**30).map(str),
                    st.sampled_from(["delivered", "SENT", " queued ", "", "2026-11-23 10:04:05"]),
                    st.datetimes().map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S.%f")),
                ),
            ),
            max_size=12,
        )
    )
    return draw(st.permutations(params))


def test_signed_callbacks_with_generated_fields_are_stored_as_sent_or_refused_as_malformed(
    server: LedgerServer,
) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:

        @fuzz(100)
        @given(params=callback_params(), as_json=st.booleans())
        def check(params: list[tuple[str, str]], as_json: bool) -> None:
            remember_numbers(params)
            nonce = secrets.token_hex(8)
            signature = sign_v3(
                method="POST", url=CALLBACK_URL, params=params, nonce=nonce, auth_token=PLIVO_TOKEN
            )
            headers = {"X-Plivo-Signature-V3": signature, "X-Plivo-Signature-V3-Nonce": nonce}
            if as_json:
                fields: dict[str, Any] = {}
                for key, value in params:
                    fields.setdefault(key, []).append(value)
                content = json.dumps({k: v[0] if len(v) == 1 else v for k, v in fields.items()})
                headers["content-type"] = "application/json"
            else:
                content = urlencode(params)
                headers["content-type"] = "application/x-www-form-urlencoded"
            response = client.post("/plivo/status", content=content.encode(), headers=headers)
            assert_no_failure(
                response.status_code,
                response.headers.get("content-type", ""),
                response.content,
                f"callback {params!r}",
            )
            assert response.status_code in {200, 400}, (params, response.text)
            if response.status_code == 200:
                uuid = next(v for k, v in params if k == "MessageUUID").strip()
                trail = client.get(f"/v1/messages/{uuid}/events", headers=AUTHORIZED)
                assert trail.status_code == 200, trail.text
                stored = {e["position"]: e for e in trail.json()["events"]}
                event = stored[response.json()["position"]]
                expected: dict[str, Any] = {}
                for key, value in params:
                    current = expected.get(key)
                    if current is None:
                        expected[key] = value
                    elif isinstance(current, list):
                        current.append(value)
                    else:
                        expected[key] = [current, value]
                if response.json()["result"] == "appended":
                    assert event["payload"] == expected

        check()


@fuzz(300)
@given(body=st.binary(max_size=2000))
def test_the_form_parser_raises_only_callback_errors(body: bytes) -> None:
    try:
        params = parse_form(body)
        to_event(params, meta=EventMeta("plivo", "v3"), timestamps_tz=UTC)
    except CallbackError:
        pass


@fuzz(300)
@given(
    body=st.one_of(
        st.binary(max_size=2000),
        st.recursive(
            st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | TEXT,
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(FIELD_NAMES, inner, max_size=6)
            ),
            max_leaves=20,
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_the_json_parser_raises_only_callback_errors(body: bytes) -> None:
    try:
        params = parse_json(body)
        to_event(params, meta=EventMeta("plivo", "v3"), timestamps_tz=UTC)
    except CallbackError:
        pass


@fuzz(300)
@given(query=st.text(max_size=500) | st.lists(st.tuples(TEXT, TEXT)).map(urlencode))
def test_the_query_parser_raises_only_callback_errors(query: str) -> None:
    try:
        params = parse_query(query)
        to_event(params, meta=EventMeta("plivo", "v3"), timestamps_tz=UTC)
    except CallbackError:
        pass


SIGNATURE_HEADERS = [
    "X-Plivo-Signature-V3",
    "X-Plivo-Signature-Ma-V3",
    "X-Plivo-Signature-V3-Nonce",
    "X-Plivo-Signature-V2",
    "X-Plivo-Signature-Ma-V2",
    "X-Plivo-Signature-V2-Nonce",
]
HEADER_VALUES = st.one_of(
    st.text(max_size=80),
    st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
    st.lists(st.text(string.printable, max_size=44), max_size=4).map(", ".join),
)


@fuzz(500)
@given(
    method=st.sampled_from(["GET", "POST", "get", "PUT", ""]),
    query=st.text(max_size=60),
    params=st.lists(st.tuples(st.text(max_size=20), st.text(max_size=20)), max_size=8),
    headers=st.dictionaries(
        st.one_of(
            st.sampled_from(SIGNATURE_HEADERS),
            st.sampled_from(SIGNATURE_HEADERS).map(str.lower),
            st.text(max_size=20),
        ),
        HEADER_VALUES,
        max_size=6,
    ),
    tokens=st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=3),
    main_token=st.none() | st.text(min_size=1, max_size=30),
)
def test_the_signature_check_raises_only_signature_errors(
    method: str,
    query: str,
    params: list[tuple[str, str]],
    headers: dict[str, str],
    tokens: list[str],
    main_token: str | None,
) -> None:
    url = CALLBACK_URL + (f"?{query}" if query else "")
    try:
        verify_signature(
            method=method,
            url=url,
            params=params,
            headers=headers,
            auth_tokens=tokens,
            main_auth_tokens=(main_token,) if main_token else (),
        )
    except SignatureError:
        return
    # Accepting a generated signature would mean it was forged without a token.
    pytest.fail(f"a generated signature was accepted: {headers!r}")
