"""Bearer-token guards: the read API's, and sending's (a separate set of tokens)."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from api.problems import Problem
from api.services import services_of
from ledger.tokens import token_matches


def _refuse() -> Problem:
    return Problem(
        401,
        "A valid read-API token is required: send 'Authorization: Bearer <token>' "
        "(see 'ledger token').",
        headers={"WWW-Authenticate": 'Bearer realm="ledger"'},
    )


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    scheme, _sep, token = connection.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def require_token(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Let the request through only with ``Authorization: Bearer <a configured token>``."""
    token = _bearer(connection)
    if token is None or not token_matches(token, services_of(connection).api_tokens):
        raise _refuse()


def require_token_or_query(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """As :func:`require_token`, or with the token as ``?token=`` for a browser's
    ``EventSource``, which cannot send headers (the live feed only)."""
    token = _bearer(connection) or connection.query_params.get("token")
    if token is None or not token_matches(token, services_of(connection).api_tokens):
        raise _refuse()


def require_send_token(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Let the request through only with ``Authorization: Bearer <a LEDGER_SEND_TOKENS
    token>``: 401 without a known token, 403 with a read token (reading is not sending)."""
    token = _bearer(connection)
    services = services_of(connection)
    if token is not None and token_matches(token, services.send_tokens):
        return
    if token is not None and token_matches(token, services.api_tokens):
        raise Problem(
            403,
            "This token may read but not send: use a token from LEDGER_SEND_TOKENS.",
        )
    raise Problem(
        401,
        "A send token is required: send 'Authorization: Bearer <token>' with a token from "
        "LEDGER_SEND_TOKENS.",
        headers={"WWW-Authenticate": 'Bearer realm="ledger-send"'},
    )
