"""Bearer-token guard for the read API."""

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
