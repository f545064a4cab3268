"""Plivo request signatures: verify the V3 and V2 schemes, and produce them for tests and tools.

The V3 signed string is built with the plivo SDK's own functions, so that this module and
Plivo agree on every quirk of it (how the query string and the body are sorted and joined).
The comparison is ours: the SDK compares with ``==``/``in``, which leaks timing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Literal
from urllib.parse import urlparse, urlunparse

import msgspec
from plivo.utils.signature_v3 import (
    construct_get_url,
    construct_post_url,
    get_signature_v3,
)

Scheme = Literal["v3", "v3-ma", "v2", "v2-ma"]


class SignatureError(Exception):
    """A request whose signature is missing or wrong.

    ``reason`` is a sentence safe to show to the caller: it names headers, never tokens.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SignatureCheck(msgspec.Struct, frozen=True):
    """A signature that matched: which header it came in and the nonce it was made with."""

    scheme: Scheme
    nonce: str


class _Family(msgspec.Struct, frozen=True):
    """The headers of one signature scheme (V3 or V2)."""

    header: str
    main_header: str
    nonce_header: str
    scheme: Scheme
    main_scheme: Scheme


_V3 = _Family(
    header="X-Plivo-Signature-V3",
    main_header="X-Plivo-Signature-Ma-V3",
    nonce_header="X-Plivo-Signature-V3-Nonce",
    scheme="v3",
    main_scheme="v3-ma",
)
_V2 = _Family(
    header="X-Plivo-Signature-V2",
    main_header="X-Plivo-Signature-Ma-V2",
    nonce_header="X-Plivo-Signature-V2-Nonce",
    scheme="v2",
    main_scheme="v2-ma",
)


def verify_signature(
    *,
    method: str,
    url: str,
    params: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    auth_tokens: Sequence[str],
    main_auth_token: str | None,
) -> SignatureCheck:
    """Check the Plivo signature of a callback and say which header carried it.

    ``url`` is the full URL as Plivo called it (public base URL + path + query string);
    ``params`` are the decoded body parameters of a POST, or the query parameters of a GET.
    ``-V3``/``-V2`` headers are checked against ``auth_tokens``, ``-Ma-`` headers against
    ``main_auth_token``. Raises :class:`SignatureError` when no header matches.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    # Any V3 header (even a lone nonce) means Plivo signed with V3: letting a V2 signature
    # decide then would let an attacker strip V3 and fall back to the body-blind scheme.
    if any(name.lower() in lowered for name in (_V3.header, _V3.main_header, _V3.nonce_header)):
        v3_signed = _v3_string(method, url, params)
        return _verify_family(
            _V3,
            lowered,
            lambda token, nonce: _v3_digest(v3_signed, nonce, token),
            auth_tokens,
            main_auth_token,
        )
    if any(name.lower() in lowered for name in (_V2.header, _V2.main_header, _V2.nonce_header)):
        v2_signed = _v2_string(url)
        return _verify_family(
            _V2,
            lowered,
            lambda token, nonce: _v2_digest(v2_signed, nonce, token),
            auth_tokens,
            main_auth_token,
        )
    raise SignatureError(
        f"missing {_V3.header} or {_V2.header} header: this endpoint only accepts "
        "callbacks signed by Plivo"
    )


def sign_v3(
    *, method: str, url: str, params: Sequence[tuple[str, str]], nonce: str, auth_token: str
) -> str:
    """The ``X-Plivo-Signature-V3`` value Plivo would send for this request and nonce."""
    return _v3_digest(_v3_string(method, url, params), nonce, auth_token).decode("ascii")


def sign_v2(*, url: str, nonce: str, auth_token: str) -> str:
    """The ``X-Plivo-Signature-V2`` value Plivo would send for this URL and nonce."""
    return _v2_digest(_v2_string(url), nonce, auth_token).decode("ascii")


def body_digest(params: Sequence[tuple[str, str]]) -> bytes:
    """A SHA-256 digest of ``params`` that ignores their order but nothing else.

    V2 signatures do not cover the body: remembering this digest with an accepted nonce lets
    a replay of that nonce with a different body be told apart from a plain retry.
    """
    # JSON arrays of pairs keep keys and values apart, whatever characters they contain.
    return hashlib.sha256(msgspec.json.encode(sorted(params))).digest()


def _verify_family(
    family: _Family,
    lowered: Mapping[str, str],
    digest: Callable[[str, str], bytes],
    auth_tokens: Sequence[str],
    main_auth_token: str | None,
) -> SignatureCheck:
    candidates = [
        (family.header, family.scheme, tuple(auth_tokens)),
        (family.main_header, family.main_scheme, (main_auth_token,) if main_auth_token else ()),
    ]
    received = [
        (header, scheme, tokens, lowered[header.lower()])
        for header, scheme, tokens in candidates
        if header.lower() in lowered
    ]
    if not received:
        raise SignatureError(
            f"{family.nonce_header} was sent without {family.header} or {family.main_header}"
        )
    nonce = lowered.get(family.nonce_header.lower(), "").strip()
    if not nonce:
        raise SignatureError(
            f"missing {family.nonce_header} header: it must accompany {family.header}"
        )
    for _header, scheme, tokens, value in received:
        # During token rotation Plivo sends one signature per active token, comma-separated.
        offered = [part.strip().encode("utf-8", "replace") for part in value.split(",")]
        for token in tokens:
            expected = digest(token, nonce)
            if any(hmac.compare_digest(expected, signature) for signature in offered):
                return SignatureCheck(scheme=scheme, nonce=nonce)
    names = " or ".join(header for header, _scheme, _tokens, _value in received)
    raise SignatureError(
        f"{names} does not match this request: it must be made with a configured auth token "
        "over the URL Plivo called (scheme, host, port and path as configured)"
    )


def _v3_string(method: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    # The SDK takes repeated keys as a list and sorts a list's values; a one-element list
    # signs exactly like a plain string, so every key can be given as a list.
    grouped: dict[str, list[str]] = {}
    for key, value in params:
        grouped.setdefault(key, []).append(value)
    verb = method.upper()
    if verb not in {"GET", "POST"}:
        raise SignatureError(f"Plivo signs only GET and POST callbacks, not {method}")
    try:
        if verb == "GET":
            signed = construct_get_url(url, grouped)
        else:
            signed = construct_post_url(url, grouped)
    except UnicodeError:
        # The SDK parses the URL as ASCII bytes. Raw non-ASCII in the request target (Plivo
        # percent-encodes) is not a URL Plivo called, so no signature can be valid for it.
        raise SignatureError(
            "the request URL holds raw non-ASCII characters: Plivo percent-encodes the URLs it "
            "calls, so this request cannot carry a valid signature"
        ) from None
    return bytes(signed).decode("utf-8")


def _v3_digest(signed: str, nonce: str, auth_token: str) -> bytes:
    # get_signature_v3 reads bytes as Latin-1, which garbles non-ASCII values: hand it text.
    return bytes(get_signature_v3(auth_token.encode("utf-8"), signed, nonce))


def _v2_string(url: str) -> str:
    # Same cut as plivo.utils.validate_signature: scheme://netloc/path, nothing after it.
    parts = urlparse(url)
    return urlunparse((parts.scheme, parts.netloc, parts.path, "", "", ""))


def _v2_digest(signed: str, nonce: str, auth_token: str) -> bytes:
    # The nonce follows the URL directly: V2 puts no separator between them.
    mac = hmac.new(auth_token.encode("utf-8"), (signed + nonce).encode("utf-8"), hashlib.sha256)
    return base64.b64encode(mac.digest())
