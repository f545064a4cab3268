"""Bearer-token guards for the read API."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from api.problems import Problem
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
    if token is None or not token_matches(token, connection.app.state.services.api_tokens):
        raise _refuse()


def require_token_or_query(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """As :func:`require_token`, or with the token as ``?token=`` for a browser's
    ``EventSource``, which cannot send headers (the live feed only)."""
    token = _bearer(connection) or connection.query_params.get("token")
    if token is None or not token_matches(token, connection.app.state.services.api_tokens):
        raise _refuse()
