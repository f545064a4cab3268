"""Plivo request signatures: verify the V3 and V2 schemes, and produce them for tests and tools.

The V3 signed string is built here directly, with exactly the rules of the plivo SDK's
``plivo.utils.signature_v3`` (tests check the two agree, on Plivo's published vectors and on
generated payloads): the SDK re-parses the URL and formats every value on each call, which
costs several times the HMAC itself. The comparison is constant-time: the SDK compares with
``==``/``in``, which leaks timing.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Literal
from urllib.parse import parse_qs, urlparse, urlunparse

import msgspec

Scheme = Literal["v3", "v3-ma", "v2", "v2-ma"]
#: Nonces are pinned per family: a V3 nonce and a V2 nonce never collide.
Family = Literal["v3", "v2"]


class SignatureError(Exception):
    """A request whose signature is missing or wrong.

    ``reason`` is a sentence safe to show to the caller: it names headers, never tokens.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SignatureCheck(msgspec.Struct, frozen=True):
    """A signature that matched: which header carried it, the nonce it was made with, every
    header of its family as received (what ``ledger verify`` re-checks later), and the
    :func:`body_digest` of the parameters it was checked with (what its nonce is pinned to,
    computed from the pairs sorted once for the V3 string too)."""

    scheme: Scheme
    nonce: str
    headers: dict[str, str]
    body_digest: bytes

    @property
    def family(self) -> Family:
        """``v3`` or ``v2``: the scheme family, within which a nonce signs one body."""
        return "v3" if self.scheme.startswith("v3") else "v2"


class _Family(msgspec.Struct, frozen=True, dict=True):
    """The headers of one signature scheme (V3 or V2)."""

    header: str
    main_header: str
    nonce_header: str
    scheme: Scheme
    main_scheme: Scheme

    @property
    def names(self) -> tuple[str, str, str]:
        return (self.header, self.main_header, self.nonce_header)

    @functools.cached_property
    def lowered(self) -> tuple[str, str, str]:
        """The header names as ASGI servers deliver them (computed once)."""
        return (self.header.lower(), self.main_header.lower(), self.nonce_header.lower())


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
#: Every signature header, lower case (as ASGI servers deliver header names).
SIGNATURE_HEADERS = frozenset(name.lower() for family in (_V3, _V2) for name in family.names)


def has_signature_headers(headers: Mapping[str, str]) -> bool:
    """Whether any Plivo signature header is present: the cheapest refusal, before parsing."""
    return any(name in headers for name in SIGNATURE_HEADERS)


def verify_signature(
    *,
    method: str,
    url: str,
    params: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    auth_tokens: Sequence[str],
    main_auth_tokens: Sequence[str] = (),
) -> SignatureCheck:
    """Check the Plivo signature of a callback and say which header carried it.

    ``url`` is the full URL as Plivo called it (public base URL + the raw path and query as
    received); ``params`` are the decoded body parameters of a POST, or the query parameters
    of a GET. ``-V3``/``-V2`` headers are checked against ``auth_tokens``, ``-Ma-`` headers
    against ``main_auth_tokens``. Raises :class:`SignatureError` when no header matches.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    # Any V3 header (even a lone nonce) means Plivo signed with V3: letting a V2 signature
    # decide then would let an attacker strip V3 and fall back to the body-blind scheme.
    if any(name in lowered for name in _V3.lowered):
        ordered = sorted(params)  # once, for both the signed string and the digest
        v3_signed = _v3_string(method, url, ordered)
        return _verify_family(
            _V3,
            lowered,
            lambda token, nonce: _v3_digest(v3_signed, nonce, token),
            auth_tokens=auth_tokens,
            main_auth_tokens=main_auth_tokens,
            digest_body=lambda: _digest(ordered),
        )
    if any(name in lowered for name in _V2.lowered):
        v2_signed = _url_parts(url).base
        return _verify_family(
            _V2,
            lowered,
            lambda token, nonce: _v2_digest(v2_signed, nonce, token),
            auth_tokens=auth_tokens,
            main_auth_tokens=main_auth_tokens,
            digest_body=lambda: body_digest(params),
        )
    raise SignatureError(
        f"missing {_V3.header} or {_V2.header} header: this endpoint only accepts "
        "callbacks signed by Plivo"
    )


def sign_v3(
    *, method: str, url: str, params: Sequence[tuple[str, str]], nonce: str, auth_token: str
) -> str:
    """The ``X-Plivo-Signature-V3`` value Plivo would send for this request and nonce."""
    return _v3_digest(v3_signed_string(method, url, params), nonce, auth_token).decode("ascii")


def sign_v2(*, url: str, nonce: str, auth_token: str) -> str:
    """The ``X-Plivo-Signature-V2`` value Plivo would send for this URL and nonce."""
    return _v2_digest(_url_parts(url).base, nonce, auth_token).decode("ascii")


def body_digest(params: Sequence[tuple[str, str]]) -> bytes:
    """A SHA-256 digest of ``params`` that ignores their order but nothing else.

    A nonce is pinned to this digest: a V2 signature does not cover the body, and a V3 one
    cannot tell ``ErrorCode=From1…`` from ``ErrorCode=&From=1…``. JSON arrays of pairs keep
    keys and values apart, whatever characters they contain.
    """
    return _digest(sorted(params))


def _digest(ordered: list[tuple[str, str]]) -> bytes:
    return hashlib.sha256(msgspec.json.encode(ordered)).digest()


def v3_signed_string(method: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """The string a V3 signature is the HMAC of (before ``.nonce``), as the plivo SDK builds it.

    GET: ``scheme://netloc/path`` + ``?`` + the URL's and the parameters' pairs merged and
    sorted as ``k=v&…``. POST: the URL's own sorted query after ``?`` (then ``.`` if there
    are parameters too), then every parameter as ``keyvalue``, keys sorted and each key's
    values sorted, nothing between them. Raises :class:`SignatureError` for a method Plivo
    does not sign or a URL holding raw non-ASCII characters (the SDK cannot parse those).
    """
    return _v3_string(method, url, sorted(params))


def _v3_string(method: str, url: str, ordered: list[tuple[str, str]]) -> str:
    """:func:`v3_signed_string` of parameters already sorted (sorting pairs sorts by key,
    then each key's values: exactly the SDK's order)."""
    verb = method.upper()
    if verb not in {"GET", "POST"}:
        raise SignatureError(f"Plivo signs only GET and POST callbacks, not {method}")
    if not url.isascii():
        raise SignatureError(
            "the request URL holds raw non-ASCII characters: Plivo percent-encodes the URLs it "
            "calls, so this request cannot carry a valid signature"
        )
    parts = _url_parts(url)
    base = parts.base
    if verb == "GET":
        # The SDK merges the URL's query into the parameters key by key, the URL winning (the
        # parameters of a GET are that same query, so the two agree).
        query = parts.query
        merged = [(key, value) for key, value in ordered if key not in query]
        merged += [(key, value) for key, values in query.items() for value in values]
        sorted_query = "&".join(map("=".join, sorted(merged)))
        return f"{base}?{sorted_query}" if sorted_query else base
    sorted_query = parts.sorted_query
    if not ordered:
        return f"{base}?{sorted_query}" if sorted_query else base
    body = "".join(itertools.chain.from_iterable(ordered))
    return f"{base}?{sorted_query}.{body}" if sorted_query else f"{base}?{body}"


class _URLParts(msgspec.Struct, frozen=True):
    """What a signature takes from a URL: ``scheme://netloc/path`` (all V2 signs, the cut
    ``plivo.utils.validate_signature`` makes, and where V3 starts), the parsed query and its
    sorted ``k=v&…`` form (V3 POST)."""

    base: str
    query: dict[str, list[str]]
    sorted_query: str


@functools.lru_cache(maxsize=64)
def _url_parts(url: str) -> _URLParts:
    """The signature parts of ``url``, parsed once (cached: a deployment's callbacks come to
    a handful of URLs, so the parse is not redone per request). Callers must not change the
    query dict."""
    parts = urlparse(url)
    base = urlunparse((parts.scheme, parts.netloc, parts.path, "", "", ""))
    query = parse_qs(parts.query, keep_blank_values=True)
    sorted_query = "&".join(
        f"{key}={value}" for key in sorted(query) for value in sorted(query[key])
    )
    return _URLParts(base, query, sorted_query)


def _verify_family(
    family: _Family,
    lowered: Mapping[str, str],
    digest: Callable[[str, str], bytes],
    *,
    auth_tokens: Sequence[str],
    main_auth_tokens: Sequence[str],
    digest_body: Callable[[], bytes],
) -> SignatureCheck:
    """The check of one family's headers; ``digest_body`` is only called for a match, so a
    junk signature costs no digest."""
    header, main_header, nonce_header = family.lowered
    candidates = [
        (lowered[name], scheme, tokens)
        for name, scheme, tokens in (
            (header, family.scheme, auth_tokens),
            (main_header, family.main_scheme, main_auth_tokens),
        )
        if name in lowered
    ]
    if not candidates:
        raise SignatureError(
            f"{family.nonce_header} was sent without {family.header} or {family.main_header}"
        )
    nonce = lowered.get(nonce_header, "").strip()
    if not nonce:
        raise SignatureError(
            f"missing {family.nonce_header} header: it must accompany {family.header}"
        )
    for value, scheme, tokens in candidates:
        # During token rotation Plivo sends one signature per active token, comma-separated.
        offered = [part.strip().encode("utf-8", "replace") for part in value.split(",")]
        for token in tokens:
            expected = digest(token, nonce)
            if any(hmac.compare_digest(expected, signature) for signature in offered):
                material = {
                    name: lowered[low]
                    for name, low in zip(family.names, family.lowered, strict=True)
                    if low in lowered
                }
                return SignatureCheck(
                    scheme=scheme, nonce=nonce, headers=material, body_digest=digest_body()
                )
    names = " or ".join(
        name
        for name, low in ((family.header, header), (family.main_header, main_header))
        if low in lowered
    )
    raise SignatureError(
        f"{names} does not match this request: it must be made with a configured auth token "
        "over the URL Plivo called (scheme, host, port and path as configured)"
    )


def _v3_digest(signed: str, nonce: str, auth_token: str) -> bytes:
    return base64.b64encode(
        hmac.digest(auth_token.encode(), f"{signed}.{nonce}".encode(), "sha256")
    )


def _v2_digest(signed: str, nonce: str, auth_token: str) -> bytes:
    # The nonce follows the URL directly: V2 puts no separator between them.
    return base64.b64encode(hmac.digest(auth_token.encode(), (signed + nonce).encode(), "sha256"))
