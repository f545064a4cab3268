"""Errors as RFC 9457 problem details: what went wrong and what to do about it.

Every error the service answers is ``application/problem+json``, raised as :class:`Problem`
(Litestar's ``ProblemDetailsException``) and answered by Litestar's problem-details plugin.
Litestar's own errors (validation, an oversized body, an unknown route) are turned into the
same shape by :func:`problem_from_http_exception`. Routes declare the problems they can answer
in the OpenAPI document with :func:`problem_responses`.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import ParameterKwarg
from litestar.plugins.problem_details import ProblemDetailsException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class Problem(ProblemDetailsException):
    """An HTTP error answered as problem details; ``extra`` members (``field`` …) join the body.

    ``instance`` is the request's path unless given.
    """

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        instance: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(
            detail=detail,
            status_code=status_code,
            headers=headers,
            extra=extra,
            type_="about:blank",
            title=HTTPStatus(status_code).phrase,
            instance=instance,
        )

    def to_response(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        """The problem-details response, naming the request's path as the ``instance``."""
        if self.instance is None:
            self.instance = request.url.path
        return super().to_response(request)


class ParameterError(msgspec.Struct, frozen=True):
    """One request parameter that failed validation."""

    message: str
    key: str | msgspec.UnsetType = msgspec.UNSET
    source: str | msgspec.UnsetType = msgspec.UNSET


class ProblemDetails(msgspec.Struct, frozen=True):
    """An error, as RFC 9457 problem details (the body of every 4xx and 5xx answer)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    #: The one input at fault, by the name the client sent it under.
    field: str | msgspec.UnsetType = msgspec.UNSET
    #: Every parameter that failed validation (400s from the framework's own checks).
    errors: list[ParameterError] | msgspec.UnsetType = msgspec.UNSET


#: What each status means for a client, in the OpenAPI document.
_MEANINGS = {
    400: "The request is malformed: `detail` says how, `field` names the input at fault.",
    401: "No valid read-API token: send `Authorization: Bearer <token>` (see `ledger token`).",
    403: "Refused: the request is not authenticated for this.",
    404: "Nothing is known under this identifier.",
    413: "The body is over the size limit (`LEDGER_MAX_BODY_BYTES`); nothing was stored.",
    415: "The Content-Type is not accepted.",
    503: "The database cannot answer right now; retry after the `Retry-After` seconds.",
}


def problem_spec(status_code: int, description: str | None = None) -> ResponseSpec:
    """The OpenAPI description of a problem-details answer with ``status_code``."""
    return ResponseSpec(
        data_container=ProblemDetails,
        media_type=PROBLEM_JSON,
        description=description or _MEANINGS.get(status_code, HTTPStatus(status_code).phrase),
        generate_examples=False,
    )


def problem_responses(*status_codes: int) -> dict[int, ResponseSpec]:
    """A route's ``responses=``: a problem-details answer for each status code.

    For a route-specific description, replace one entry with :func:`problem_spec`:
    ``{**problem_responses(400, 503), 403: problem_spec(403, "The signature is invalid.")}``.
    """
    return {code: problem_spec(code) for code in status_codes}


def _parameter_name(request: Request[Any, Any, Any], key: str) -> str:
    """The name a client sent a parameter under (``format``), not the handler's (``output``)."""
    parameter = request.route_handler.parsed_fn_signature.parameters.get(key)
    kwarg = parameter.kwarg_definition if parameter is not None else None
    if isinstance(kwarg, ParameterKwarg) and kwarg.name:
        return kwarg.name
    return key


def _validation_problem(request: Request[Any, Any, Any], exc: ValidationException) -> Problem:
    raw = exc.extra if isinstance(exc.extra, list) else []
    errors = [
        ParameterError(
            message=str(error.get("message", "invalid")),
            key=_parameter_name(request, error["key"]) if "key" in error else msgspec.UNSET,
            source=str(getattr(error["source"], "value", error["source"]))
            if "source" in error
            else msgspec.UNSET,
        )
        for error in raw
        if isinstance(error, dict)
    ]
    named = [error for error in errors if isinstance(error.key, str)]
    detail = "; ".join(
        f"the {error.source if isinstance(error.source, str) else 'request'} parameter "
        f"{error.key!r} is invalid ({error.message})"
        for error in named
    )
    extra: dict[str, Any] = {"errors": msgspec.to_builtins(errors)}
    if len({error.key for error in named}) == 1:
        extra["field"] = named[0].key
    detail = detail[:1].upper() + detail[1:] if detail else exc.detail
    return Problem(400, f"{detail}: fix it and send the request again.", **extra)


def _too_large_problem(request: Request[Any, Any, Any]) -> Problem:
    limit = request.route_handler.resolve_request_max_body_size()
    return Problem(
        413,
        f"The request body is over the {limit}-byte limit (LEDGER_MAX_BODY_BYTES); nothing "
        "was stored. Plivo's callbacks are far smaller: check what is sending this.",
    )


def problem_from_http_exception(
    request: Request[Any, Any, Any], exc: HTTPException
) -> Response[Any]:
    """Litestar's own HTTP errors (validation, 413, 404 route, 405 …) as problem details."""
    if isinstance(exc, ValidationException):
        problem = _validation_problem(request, exc)
    elif isinstance(exc, RequestEntityTooLarge):
        problem = _too_large_problem(request)
    else:
        extra = exc.extra if isinstance(exc.extra, dict) else {}
        detail = exc.detail
        if detail == HTTPStatus(exc.status_code).phrase:  # the framework said nothing more
            detail = (
                f"{detail}: {request.method} {request.url.path}. The API is described at /schema."
            )
        problem = Problem(exc.status_code, detail, headers=exc.headers, **extra)
    return problem.to_response(request)


def problem_from_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A bug: log it with its traceback, tell the caller nothing internal."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return Problem(
        500, "The server failed to handle this request. It has been logged; retry later."
    ).to_response(request)
