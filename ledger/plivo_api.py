"""Plivo's REST API through the official SDK: where it points, how it is called, what its
errors mean.

**Where it points.** The SDK keeps its base URI in module constants of
``plivo.rest.client`` (``PLIVO_API``, ``PLIVO_API_BASE_URI``) and resets each client's
``base_uri`` to ``PLIVO_API_BASE_URI`` on every messaging request, so a client attribute
cannot redirect it. :func:`point_sdk_at` sets those constants, for the whole process, to
``PLIVO_API_URL`` (default Plivo's production API): the one place that knows about them, so
that tests and egress proxies can point the SDK elsewhere.

**How it is called.** The SDK is synchronous (``requests``): :class:`PlivoApi` runs each call
in a thread of its own bounded pool (``LEDGER_SEND_CONCURRENCY`` threads), each thread with
its own client and so its own keep-alive connection, and the event loop never blocks.

**What its errors mean.** The SDK raises an exception per HTTP status family, without the
status; a response hook keeps the status, and :class:`PlivoFailure` says whether the request
itself was wrong (kind ``invalid_request``: Plivo answered 400, 404, 405, 409 or 422, or the SDK
refused the arguments before sending) or Plivo failed, refused our credentials, or did not
answer in time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

import msgspec
import plivo
import plivo.exceptions
import plivo.rest.client
import requests

_ACCOUNT_PATH: Final = "v1/Account"
_CLIENT_ERRORS: Final = frozenset({400, 404, 405, 409, 422})

T = TypeVar("T")


def point_sdk_at(api_url: str) -> None:
    """Make every Plivo SDK client in this process call ``api_url`` (scheme://host[:port])."""
    base = api_url.rstrip("/")
    plivo.rest.client.PLIVO_API = base
    plivo.rest.client.PLIVO_API_BASE_URI = f"{base}/{_ACCOUNT_PATH}"


class PlivoFailure(Exception):
    """A Plivo call that sent nothing we know of: ``http_status`` (None when no answer
    came), ``kind`` (``invalid_request``, ``authentication``, ``server``, ``timeout``,
    ``unreachable``) and Plivo's own message."""

    def __init__(self, kind: str, detail: str, http_status: int | None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.http_status = http_status


class Submission(msgspec.Struct, frozen=True):
    """Plivo's answer to a send: one UUID per message queued, and the numbers it refused."""

    api_id: str
    message_uuids: list[str]
    invalid_numbers: list[str]


class PlivoMessage(msgspec.Struct, frozen=True, kw_only=True):
    """The Message API's record of one message (``messages.get``), as strings."""

    message_uuid: str
    message_state: str
    error_code: str = ""
    from_number: str = ""
    to_number: str = ""
    message_type: str = ""
    units: str = ""
    total_amount: str = ""
    total_rate: str = ""
    message_time: str = ""


def _failure(error: plivo.exceptions.PlivoRestError, status: int | None) -> PlivoFailure:
    """What an SDK error means. Without a status the SDK refused the arguments before
    sending anything."""
    if isinstance(error, plivo.exceptions.GeoPermissionError):
        return PlivoFailure("invalid_request", str(error), status)
    if isinstance(error, (plivo.exceptions.AuthenticationError, plivo.exceptions.ForbiddenError)):
        return PlivoFailure("authentication", str(error), status)
    if status is None or status in _CLIENT_ERRORS:
        return PlivoFailure("invalid_request", str(error), status)
    return PlivoFailure("server", str(error), status)


class _Thread(threading.local):
    client: Any = None
    status: int | None = None


class PlivoApi:
    """Calls to Plivo's Message API, each in a thread of a bounded pool."""

    def __init__(
        self, auth_id: str, auth_token: str, *, api_url: str, timeout: float, concurrency: int
    ) -> None:
        """``timeout`` bounds each HTTP call (connect and read); ``concurrency`` the calls
        in flight."""
        point_sdk_at(api_url)
        self._auth = (auth_id, auth_token)
        self._timeout = timeout
        self._threads = _Thread()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="plivo"
        )

    def close(self) -> None:
        """Stop the threads (calls in flight finish first)."""
        self._pool.shutdown(wait=True)

    def _client(self) -> Any:
        """This thread's SDK client, made on first use."""
        if self._threads.client is None:
            client = plivo.RestClient(*self._auth, timeout=self._timeout)

            def keep_status(response: requests.Response, *_: Any, **__: Any) -> None:
                self._threads.status = response.status_code

            client.session.hooks["response"].append(keep_status)
            self._threads.client = client
        return self._threads.client

    async def _run(self, call: Callable[[Any], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, call)

    def _call(self, call: Callable[[Any], T]) -> T:
        self._threads.status = None
        try:
            return call(self._client())
        except requests.Timeout:
            raise PlivoFailure("timeout", "Plivo did not answer in time", None) from None
        except requests.RequestException as error:
            raise PlivoFailure(
                "unreachable", f"Plivo could not be reached ({type(error).__name__})", None
            ) from None
        except plivo.exceptions.PlivoRestError as error:
            raise _failure(error, self._threads.status) from None

    async def create(self, **params: Any) -> Submission:
        """``messages.create(**params)``: Plivo's answer, or :class:`PlivoFailure`."""

        def create(client: Any) -> Submission:
            answer = client.messages.create(**params)
            return Submission(
                api_id=str(getattr(answer, "api_id", "") or ""),
                message_uuids=[str(u) for u in getattr(answer, "message_uuid", None) or []],
                invalid_numbers=[str(n) for n in getattr(answer, "invalid_number", None) or []],
            )

        return await self._run(create)

    async def get(self, message_uuid: str) -> PlivoMessage | None:
        """``messages.get``: the Message API's record, None if Plivo does not know the
        message, or :class:`PlivoFailure`."""

        def get(client: Any) -> PlivoMessage | None:
            try:
                found = client.messages.get(message_uuid)
            except plivo.exceptions.ResourceNotFoundError:
                return None
            fields = {
                name: "" if (value := getattr(found, name, None)) is None else str(value)
                for name in PlivoMessage.__struct_fields__
            }
            return PlivoMessage(**fields)

        return await self._run(get)
