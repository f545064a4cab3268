"""Security: the read API answers only a valid token, secrets are compared in constant time,
and the logs give away neither a token nor a phone number.

The routes are not listed here: every operation under ``/v1`` in the service's own OpenAPI
document is checked, so a route added later is covered without touching this file.
"""

from __future__ import annotations

import ast
import base64
import re
import secrets
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

import ledger.signatures
import ledger.tokens
from ledger.signatures import sign_v3
from tests.conftest import API_TOKEN, CALLBACK_URL, PLIVO_TOKEN
from tests.reliability.conftest import (
    AUTHORIZED,
    EXPOSURE,
    LedgerServer,
    ServerFleet,
    assert_problem,
    http,
    remember_numbers,
    signed,
)

pytestmark = pytest.mark.reliability

KNOWN_MESSAGE = "6f0c8d2e-4b1a-4e7f-9c3d-2a5b8e1f0d47"

#: Headers that must not open the read API.
REFUSED_AUTHORIZATIONS: dict[str, list[tuple[str, str]] | list[tuple[bytes, bytes]]] = {
    "no header": [],
    "wrong token": [("Authorization", "Bearer not-the-token")],
    "empty bearer": [("Authorization", "Bearer")],
    "null token": [("Authorization", "Bearer null")],
    "token without scheme": [("Authorization", API_TOKEN)],
    "other scheme": [("Authorization", f"Token {API_TOKEN}")],
    "basic scheme": [
        ("Authorization", "Basic " + base64.b64encode(f"user:{API_TOKEN}".encode()).decode())
    ],
    "no space after scheme": [("Authorization", f"Bearer{API_TOKEN}")],
    "token with a suffix": [("Authorization", f"Bearer {API_TOKEN}x")],
    "token prefix": [("Authorization", f"Bearer {API_TOKEN[:-1]}")],
    "token in another case": [("Authorization", f"Bearer {API_TOKEN.upper()}")],
    "token twice": [("Authorization", f"Bearer {API_TOKEN} {API_TOKEN}")],
    "plivo token": [("Authorization", f"Bearer {PLIVO_TOKEN}")],
    "non-ascii token": [(b"Authorization", "Bearer tést-réad".encode("latin-1"))],
    "token in another header": [("X-Api-Token", API_TOKEN), ("X-Authorization", API_TOKEN)],
    "token as a cookie": [("Cookie", f"token={API_TOKEN}; authorization=Bearer%20{API_TOKEN}")],
    "wrong then right token": [
        ("Authorization", "Bearer not-the-token"),
        ("Authorization", f"Bearer {API_TOKEN}"),
    ],
}


@pytest.fixture(scope="module")
def server(module_servers: ServerFleet, module_databases: Callable[[], str]) -> LedgerServer:
    return module_servers.create(module_databases(), name="security")


def sample_value(schema: dict[str, Any], name: str = "") -> str:
    """A valid value for a parameter, so that only the token decides the answer."""
    # The breakdown's start and end take a date or a time, so their schema is a plain string.
    if schema.get("format") == "date" or name in {"start", "end"}:
        return date.today().isoformat()
    if schema.get("format") == "uuid":
        return KNOWN_MESSAGE
    if schema.get("type") == "integer":
        return "1"
    return "x"


def read_operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, str]]]:
    """Every operation under /v1: method, concrete path and required query parameters."""
    for template, operations in document["paths"].items():
        if not template.startswith("/v1/") and template != "/v1":
            continue
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            path, query = template, {}
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                if parameter["in"] == "path":
                    name = parameter["name"]
                    value = KNOWN_MESSAGE if "uuid" in name else sample_value(schema)
                    path = path.replace(f"{{{name}}}", value)
                elif parameter["in"] == "query" and parameter.get("required"):
                    query[parameter["name"]] = sample_value(schema, parameter["name"])
            yield method.upper(), path, query


@pytest.fixture(scope="module")
def operations(server: LedgerServer) -> list[tuple[str, str, dict[str, str]]]:
    document = httpx.get(f"{server.base_url}/schema/openapi.json", timeout=30).json()
    found = list(read_operations(document))
    assert {path for _, path, _ in found} >= {
        f"/v1/messages/{KNOWN_MESSAGE}",
        f"/v1/messages/{KNOWN_MESSAGE}/events",
        "/v1/metrics/daily",
    }
    return found


@pytest.mark.parametrize("authorization", REFUSED_AUTHORIZATIONS, ids=str)
async def test_no_read_route_answers_without_a_valid_token(
    authorization: str, server: LedgerServer, operations: list[tuple[str, str, dict[str, str]]]
) -> None:
    async with http(server.base_url) as client:
        for method, path, query in operations:
            response = await client.request(
                method, path, params=query, headers=REFUSED_AUTHORIZATIONS[authorization]
            )
            assert_problem(response, 401)
            assert response.headers["www-authenticate"].lower().startswith("bearer"), path
            assert API_TOKEN not in response.text


#: Routes a read token may not use: sending takes a token of LEDGER_SEND_TOKENS.
SEND_ROUTES = {("POST", "/v1/messages")}


async def test_every_read_route_answers_a_valid_token(
    server: LedgerServer, operations: list[tuple[str, str, dict[str, str]]]
) -> None:
    async with http(server.base_url, headers=AUTHORIZED) as client:
        for method, path, query in operations:
            if path == "/v1/stream":  # the live feed never ends: its status is the answer
                async with client.stream(method, path, params=query) as stream:
                    assert stream.status_code == 200
                continue
            response = await client.request(method, path, params=query)
            # A read token reads everything, and sends nothing.
            expected = {403} if (method, path) in SEND_ROUTES else {200, 404}
            assert response.status_code in expected, (method, path, response.text)


def test_the_openapi_document_declares_the_token_on_every_read_route(
    server: LedgerServer,
) -> None:
    document = httpx.get(f"{server.base_url}/schema/openapi.json", timeout=30).json()
    for template, operations in document["paths"].items():
        if template.startswith("/v1/"):
            for method, operation in operations.items():
                assert operation.get("security") == [{"bearer": []}], (method, template)


# --- Constant-time comparisons, checked in the source ----------------------------------------

SECRET_NAMES = re.compile(r"signature|token|digest|secret|mac|expected|offered|presented|given")


def _names_in(node: ast.AST) -> set[str]:
    names = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            names.add(child.id)
        elif isinstance(child, ast.Attribute):
            names.add(child.attr)
        elif isinstance(child, ast.arg):
            names.add(child.arg)
    return names


def _comparisons_of_secrets(tree: ast.AST) -> list[str]:
    """``==``, ``!=``, ``in`` and ``not in`` comparisons with a secret-looking operand."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops):
            continue
        operands = [node.left, *node.comparators]
        secret = [name for operand in operands for name in _names_in(operand)]
        if any(SECRET_NAMES.search(name.lower()) for name in secret):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def _compare_digest_calls(tree: ast.AST) -> int:
    return sum(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "compare_digest"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "hmac"
        for node in ast.walk(tree)
    )


@pytest.mark.parametrize("module", [ledger.signatures, ledger.tokens], ids=lambda m: m.__name__)
def test_signatures_and_tokens_are_compared_only_in_constant_time(module: Any) -> None:
    tree = ast.parse(Path(module.__file__).read_text())
    assert _compare_digest_calls(tree) >= 1, f"{module.__name__} never calls hmac.compare_digest"
    assert _comparisons_of_secrets(tree) == []


def test_the_constant_time_check_catches_a_plain_comparison() -> None:
    """The source check above would see the comparisons it is there to forbid."""
    leaky = ast.parse(
        "def check(signature, offered, token, accepted):\n"
        "    return signature == offered or token in accepted\n"
    )
    assert len(_comparisons_of_secrets(leaky)) == 2
    assert _compare_digest_calls(leaky) == 0


# --- Logs --------------------------------------------------------------------------------------

#: A value that looks like a phone number: E.164 digits, optionally with a plus.
PHONE = re.compile(r"\+?\d{8,15}")


def phone_numbers_sent() -> set[str]:
    """Every From/To value this session sent that looks like a phone number, with and
    without its plus sign."""
    numbers = {n.strip() for n in EXPOSURE.phone_numbers if PHONE.fullmatch(n.strip())}
    return numbers | {n.lstrip("+") for n in numbers}


async def exercise_everything_that_logs(server: LedgerServer) -> None:
    """Valid, duplicate, refused and malformed callbacks, and read calls with good and bad
    tokens, with phone numbers in bodies, URLs and search filters."""
    numbers = [("14155550123", "919812345678"), ("+4915112345678", "+447700900123")]
    async with http(server.base_url) as client:
        for n, (sender, recipient) in enumerate(numbers):
            message = f"{KNOWN_MESSAGE[:-2]}{n:02d}"
            params = [
                ("MessageUUID", message),
                ("Status", "delivered"),
                ("From", sender),
                ("To", recipient),
                ("Sequence", "3"),
                ("ErrorCode", ""),
            ]
            callback = signed(params)
            for _ in range(2):  # appended, then duplicate
                response = await client.post(
                    "/plivo/status", content=callback.body, headers=callback.headers
                )
                assert response.status_code == 200
            forged = {**callback.headers, "x-plivo-signature-v3": "Zm9yZ2Vk"}
            response = await client.post("/plivo/status", content=callback.body, headers=forged)
            assert response.status_code == 403
            broken = [("MessageUUID", f"not-a-uuid-{recipient}"), ("From", sender)]
            remember_numbers(broken)
            response = await client.post(
                "/plivo/status", content=signed(broken).body, headers=signed(broken).headers
            )
            assert response.status_code in {400, 403}
            query = urlencode([("From", sender), ("To", recipient), ("MessageUUID", message)])
            nonce = secrets.token_hex(6)
            response = await client.get(
                f"/plivo/status?{query}",
                headers={
                    "X-Plivo-Signature-V3": sign_v3(
                        method="GET",
                        url=f"{CALLBACK_URL}?{query}",
                        params=[],
                        nonce=nonce,
                        auth_token="wrong-token",
                    ),
                    "X-Plivo-Signature-V3-Nonce": nonce,
                },
            )
            assert response.status_code == 403
            for headers in (AUTHORIZED, {"Authorization": "Bearer wrong"}, {}):
                await client.get(f"/v1/messages/{message}", headers=headers)
                await client.get(f"/v1/messages/{message}/events", headers=headers)
                await client.get(
                    "/v1/messages", params={"from": sender, "to": recipient}, headers=headers
                )
        await client.get("/metrics")
        await client.get("/ready")


async def test_the_logs_hold_no_token_and_no_full_phone_number(
    servers: ServerFleet, database_url: str
) -> None:
    """Reads the output of a server exercised here at DEBUG, and of every other server this
    session started (at DEBUG too), up to now."""
    server = servers.create(database_url, name="logging")
    await exercise_everything_that_logs(server)
    server.stop()

    logs = {path: path.read_text(errors="replace") for path in EXPOSURE.log_files if path.exists()}
    assert server.stderr_path in logs
    assert "DEBUG" in logs[server.stderr_path], "the server did not log at DEBUG"
    secrets_found = [
        f"{path.name}: {secret_name}"
        for path, text in logs.items()
        for secret_name, secret in (("PLIVO_AUTH_TOKEN", PLIVO_TOKEN), ("API token", API_TOKEN))
        if secret in text
    ]
    assert not secrets_found
    numbers = phone_numbers_sent()
    assert len(numbers) >= 4
    # Whole numbers only: a digit run that merely contains one is not that number.
    any_number = re.compile(
        r"(?<!\d)(" + "|".join(map(re.escape, sorted(numbers, key=len, reverse=True))) + r")(?!\d)"
    )
    leaked = sorted(
        {
            f"{path.name}: {found}"
            for path, text in logs.items()
            for found in any_number.findall(text)
        }
    )
    assert not leaked, f"{len(leaked)} phone numbers in the logs, e.g. {leaked[:5]}"


#: The start of a log record: a timestamp (the service's format) or a level (other formats).
RECORD_START = re.compile(r"^(\d{4}-\d\d-\d\d |\[?(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b)")
#: A record written by the service's own formatter, the one that masks phone numbers:
#: "2026-11-24 00:52:28,061 WARNING api.callbacks: refused callback …".
SERVICE_RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: "
)


async def test_every_log_record_goes_through_the_masking_formatter_at_the_configured_level(
    servers: ServerFleet, database_url: str
) -> None:
    """The phone-number masking (api.logs) only protects records it formats, and
    LEDGER_LOG_LEVEL (DEBUG for every server here) must hold in the serving process too."""
    server = servers.create(database_url, name="log-format")
    async with http(server.base_url) as client:
        refused = await client.post(
            "/plivo/status",
            content=b"MessageUUID=x",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert refused.status_code == 403  # logged as a warning
    server.stop()

    records = [
        line
        for line in server.stderr_path.read_text(errors="replace").splitlines()
        if RECORD_START.match(line)
    ]
    foreign = [line for line in records if not SERVICE_RECORD.match(line)]
    assert not foreign, f"{len(foreign)} of {len(records)} records bypass it, e.g. {foreign[:3]}"
    assert any(" WARNING api.callbacks: refused callback" in line for line in records)
    served_debug = [line for line in records if " DEBUG " in line and " asyncio: " not in line]
    assert served_debug, "no DEBUG record from the serving process at LEDGER_LOG_LEVEL=DEBUG"
