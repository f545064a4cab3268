"""Bearer-token guards: the read API's, and sending's (a separate set of tokens)."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from api.problems import Problem
from api.services import services_of
from ledger.tokens import token_matches


def require_token(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Let the request through only with ``Authorization: Bearer <a configured token>``."""
    scheme, _sep, token = connection.headers.get("authorization", "").partition(" ")
    accepted = services_of(connection).api_tokens
    if scheme.lower() != "bearer" or not token_matches(token.strip(), accepted):
        raise Problem(
            401,
            "A valid read-API token is required: send 'Authorization: Bearer <token>' "
            "(see 'ledger token').",
            headers={"WWW-Authenticate": 'Bearer realm="ledger"'},
        )


def require_send_token(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Let the request through only with ``Authorization: Bearer <a LEDGER_SEND_TOKENS
    token>``: 401 without a known token, 403 with a read token (reading is not sending)."""
    scheme, _sep, token = connection.headers.get("authorization", "").partition(" ")
    token = token.strip()
    services = connection.app.state.services
    if scheme.lower() == "bearer" and token_matches(token, services.send_tokens):
        return
    if scheme.lower() == "bearer" and token_matches(token, services.api_tokens):
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
