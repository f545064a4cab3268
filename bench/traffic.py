"""Pre-signed callback traffic, made once and cached, so signing is never in a measured loop.

Callbacks come from ``api.simulate`` (the same lifecycles and V3 signatures ``ledger simulate``
sends), with no retried duplicates: every callback is a distinct (MessageUUID, Status,
Sequence), so each one is a real append on a fresh database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import msgspec

from api import simulate
from api.simulate import SignedCallback, plan_traffic
from bench.harness import CALLBACK_PATH, CALLBACK_URL, OUT, PLIVO_AUTH_TOKEN

#: Messages per signing job: each job gets its own seed, hence its own message UUIDs.
_CHUNK_MESSAGES = 2_000
#: Callbacks per message in api.simulate's outcome mix (0.88 * 3 + 0.12 * 2).
CALLBACKS_PER_MESSAGE = 2.88


def _signed_chunk(seed: int, messages: int, shuffle: bool) -> list[SignedCallback]:
    traffic = plan_traffic(
        messages=messages,
        url=CALLBACK_URL,
        auth_token=PLIVO_AUTH_TOKEN,
        duplicate_ratio=0.0,
        shuffle=shuffle,
        seed=seed,
    )
    return traffic.callbacks


def signed_callbacks(count: int, *, seed: int, shuffle: bool = True) -> list[SignedCallback]:
    """At least ``count`` distinct signed callbacks (whole lifecycles), cached in bench/out.

    ``shuffle`` mixes messages and their steps as Plivo's retries and network would; without
    it each message's callbacks stay together in lifecycle order (queued, sent, delivered).
    """
    messages = int(count / CALLBACKS_PER_MESSAGE * 1.05) + 1
    chunks = -(-messages // _CHUNK_MESSAGES)
    # The generator's source is part of the key: traffic made by an older one is not reused.
    generator = Path(simulate.__file__).read_bytes()
    key = hashlib.sha256(
        f"{seed}:{chunks}:{shuffle}:{CALLBACK_URL}:{PLIVO_AUTH_TOKEN}:".encode() + generator
    ).hexdigest()[:16]
    cache = OUT / f"traffic-{key}.msgpack"
    if cache.exists():
        return msgspec.msgpack.decode(cache.read_bytes(), type=list[SignedCallback])
    print(f"  signing {chunks * _CHUNK_MESSAGES:,} messages' callbacks (cached for next runs)")
    seeds = [seed * 1_000_003 + n for n in range(chunks)]
    with ProcessPoolExecutor() as pool:
        parts = pool.map(_signed_chunk, seeds, [_CHUNK_MESSAGES] * chunks, [shuffle] * chunks)
        callbacks = [callback for part in parts for callback in part]
    OUT.mkdir(parents=True, exist_ok=True)
    temporary = cache.with_suffix(".tmp")
    temporary.write_bytes(msgspec.msgpack.encode(callbacks))
    temporary.replace(cache)
    return callbacks


def write_wrk_requests(callbacks: Sequence[SignedCallback], path: Path) -> Path:
    """The requests file bench/callbacks.lua reads: ``signature TAB nonce TAB body`` lines.

    Form bodies are URL-encoded, so they never contain a tab or a newline.
    """
    with path.open("wb") as out:
        for callback in callbacks:
            out.write(
                b"\t".join(
                    [
                        callback.headers["x-plivo-signature-v3"].encode(),
                        callback.headers["x-plivo-signature-v3-nonce"].encode(),
                        callback.body,
                    ]
                )
                + b"\n"
            )
    return path


def raw_post(callback: SignedCallback, port: int) -> bytes:
    """The callback as a complete HTTP/1.1 keep-alive request, ready to write to a socket."""
    head = [f"POST {CALLBACK_PATH} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    head += [f"{name}: {value}" for name, value in callback.headers.items()]
    head.append(f"Content-Length: {len(callback.body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + callback.body


def raw_get(path: str, port: int, token: str | None = None) -> bytes:
    """A GET as a complete HTTP/1.1 keep-alive request."""
    head = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if token:
        head.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode()
