"""Errors as RFC 9457 problem details: what went wrong and what to do about it."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class Problem(HTTPException):
    """An HTTP error answered as problem details; ``extra`` members are added to the body."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail=detail, status_code=status_code, headers=headers, extra=extra)


def problem_response(
    status_code: int,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Response[dict[str, Any]]:
    """A problem-details response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status_code).phrase,
        "status": status_code,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(extra or {})
    return Response(body, status_code=status_code, headers=headers, media_type=PROBLEM_JSON)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Every HTTP error the app or the framework raises, as problem details."""
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationException) and exc.extra:
        extra["errors"] = exc.extra
    elif isinstance(exc.extra, dict):
        extra.update(exc.extra)
    return problem_response(
        exc.status_code,
        exc.detail,
        headers=exc.headers,
        instance=request.url.path,
        extra=extra,
    )


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A bug: log it with its traceback, tell the caller nothing internal."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        500,
        "The server failed to handle this request. It has been logged; retry later.",
        instance=request.url.path,
    )
