"""Realistic, signed Plivo callback traffic for `ledger simulate`, the tests and the benchmarks."""

from __future__ import annotations

import asyncio
import random
import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlencode

import httpx
import msgspec

from ledger.signatures import sign_v3

Params = list[tuple[str, str]]

#: Final outcomes and how often each happens in the simulated traffic.
OUTCOMES = (("delivered", 0.80), ("undelivered", 0.08), ("failed", 0.07), ("sent", 0.05))
#: The longest a carrier takes to report (delays are exponential, mean 8 s, cut off here).
MAX_REPORT_DELAY_SECONDS = 120.0
#: The longest a simulated lifecycle lasts, from MessageTime to its last callback.
LONGEST_LIFECYCLE = timedelta(seconds=0.5 + 3 + MAX_REPORT_DELAY_SECONDS)
UNDELIVERED_CODES = ("20", "30", "50", "70", "80", "90", "100", "200")
FAILED_CODES = ("10", "40", "420", "450", "900", "1000")
PLIVO_TIME = "%Y-%m-%d %H:%M:%S.%f"


class Network(msgspec.Struct, frozen=True):
    """A mobile network messages go to: its MCC and MNC, and its numbers as Plivo writes them
    (``prefix`` and then ``digits`` more)."""

    mcc: str
    mnc: str
    prefix: str
    digits: int


#: Where simulated messages go, equally often: six networks in four countries, as an
#: account sending worldwide would, so that the analytics by country and carrier show a mix.
NETWORKS = (
    Network("405", "854", "9170", 8),  # IN, Jio
    Network("404", "45", "9198", 8),  # IN, Airtel
    Network("310", "260", "1206", 7),  # US, T-Mobile
    Network("310", "410", "1312", 7),  # US, AT&T
    Network("234", "15", "447", 9),  # GB, Vodafone UK
    Network("262", "01", "49151", 8),  # DE, Telekom
)
#: The account's sender numbers (``14155550000`` …): a pool of long codes, as a busy
#: account rotates through.
SENDERS = 20


class SignedCallback(msgspec.Struct, frozen=True):
    """One callback as Plivo would send it: the form body and its signature headers."""

    message_uuid: str
    status: str
    body: bytes
    headers: dict[str, str]


def lifecycle(
    rng: random.Random,
    start: datetime,
    message_uuid: str | None = None,
    *,
    outcome: str | None = None,
    to_number: str | None = None,
) -> list[Params]:
    """The callbacks Plivo sends for one outbound SMS, in the order Plivo generates them.

    The message is sent at ``start`` and its last callback comes at most
    :data:`LONGEST_LIFECYCLE` later. ``outcome`` (one of :data:`OUTCOMES`) and ``to_number``
    fix what is otherwise drawn at random; ``rng`` is drawn from the same way either way.
    """
    message_uuid = message_uuid or str(uuid.UUID(int=rng.getrandbits(128), version=4))
    drawn = rng.choices([o for o, _ in OUTCOMES], [w for _, w in OUTCOMES])[0]
    outcome = outcome or drawn
    units = rng.choice((1, 1, 1, 2, 3))
    rate = Decimal("0.00350")
    sender = "1415555" + f"{rng.randrange(SENDERS):04d}"
    network = rng.choice(NETWORKS)
    recipient = network.prefix + str(rng.randrange(10**network.digits)).zfill(network.digits)
    common = [
        ("From", sender),
        ("To", to_number or recipient),
        ("MessageUUID", message_uuid),
        ("ParentMessageUUID", message_uuid),
        ("PartInfo", "1 of 1"),
        ("PowerpackUUID", ""),
        ("Type", "sms"),
        ("Units", str(units)),
        ("MCC", network.mcc),
        ("MNC", network.mnc),
        ("MessageTime", start.strftime(PLIVO_TIME)),
    ]
    queued_at = start + timedelta(milliseconds=rng.randrange(50, 500))
    steps: list[tuple[str, str, datetime]] = [("queued", "QueuedTime", queued_at)]
    sent_at = queued_at + timedelta(milliseconds=rng.randrange(100, 3000))
    if outcome == "failed":
        steps.append(("failed", "DeliveryReportTime", sent_at))
    else:
        steps.append(("sent", "SentTime", sent_at))
        if outcome != "sent":
            delay = min(rng.expovariate(1 / 8), MAX_REPORT_DELAY_SECONDS)
            reported = sent_at + timedelta(seconds=delay)
            steps.append((outcome, "DeliveryReportTime", reported))
    callbacks = []
    for sequence, (status, time_field, at) in enumerate(steps, start=1):
        charged = status not in {"queued", "failed"}
        error = ""
        if status == "undelivered":
            error = rng.choice(UNDELIVERED_CODES)
        elif status == "failed":
            error = rng.choice(FAILED_CODES)
        callbacks.append(
            [
                *common,
                ("Status", status),
                ("Sequence", str(sequence)),
                ("ErrorCode", error),
                ("TotalRate", str(rate if charged else Decimal("0.00000"))),
                ("TotalAmount", str(rate * units if charged else Decimal("0.00000"))),
                (time_field, at.strftime(PLIVO_TIME)),
            ]
        )
    return callbacks


def sign(params: Params, *, url: str, auth_token: str) -> SignedCallback:
    """Encode ``params`` as Plivo's form body and sign it with V3, as Plivo would for ``url``."""
    nonce = secrets.token_hex(10)
    signature = sign_v3(method="POST", url=url, params=params, nonce=nonce, auth_token=auth_token)
    fields = dict(params)
    return SignedCallback(
        message_uuid=fields.get("MessageUUID", ""),
        status=fields.get("Status", ""),
        body=urlencode(params).encode(),
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "x-plivo-signature-v3": signature,
            "x-plivo-signature-v3-nonce": nonce,
        },
    )


class Traffic(msgspec.Struct, frozen=True):
    """A planned run: the callbacks to send, in sending order, and each message's outcome."""

    callbacks: list[SignedCallback]
    messages: int
    duplicates: int
    #: MessageUUID → its final outcome (an entry of :data:`OUTCOMES`), in planning order.
    outcomes: dict[str, str] = msgspec.field(default_factory=dict)


def plan_traffic(
    *,
    messages: int,
    url: str,
    auth_token: str,
    duplicate_ratio: float = 0.1,
    shuffle: bool = True,
    seed: int = 0,
    start: datetime | None = None,
    spread: timedelta = timedelta(hours=1),
    recipients: Sequence[str] = (),
) -> Traffic:
    """Lifecycles for ``messages`` messages, with retried duplicates and per-message reordering.

    Messages are sent within ``spread`` from ``start``; by default ``start`` is early enough
    that every callback's timestamps are in the past. Each number of ``recipients`` (as Plivo
    writes them: ``14155550100``) also gets one message of each outcome of :data:`OUTCOMES`.
    """
    rng = random.Random(seed)  # noqa: S311 - test traffic, not cryptography
    spread_seconds = max(1, int(spread.total_seconds()))
    if start is None:
        start = datetime.now(UTC) - LONGEST_LIFECYCLE - timedelta(seconds=spread_seconds)
    plans: list[tuple[str | None, str | None]] = [(None, None)] * messages
    plans += [(outcome, number) for number in recipients for outcome, _ in OUTCOMES]
    callbacks: list[SignedCallback] = []
    outcomes: dict[str, str] = {}
    for outcome, number in plans:
        at = start + timedelta(seconds=rng.randrange(spread_seconds))
        steps = lifecycle(rng, at, outcome=outcome, to_number=number)
        signed = [sign(params, url=url, auth_token=auth_token) for params in steps]
        outcomes[signed[0].message_uuid] = signed[-1].status
        callbacks += signed
    duplicates = [rng.choice(callbacks) for _ in range(int(len(callbacks) * duplicate_ratio))]
    callbacks += duplicates
    if shuffle:
        rng.shuffle(callbacks)
    return Traffic(callbacks, len(plans), len(duplicates), outcomes)


class SendReport(msgspec.Struct, frozen=True):
    """What a run of traffic got back from the server: answers by HTTP status (0 for no
    answer) and, among the 200s, by result (``appended`` or ``duplicate``)."""

    sent: int
    by_status: dict[int, int]
    seconds: float
    by_result: dict[str, int] = msgspec.field(default_factory=dict)


class _Answer(msgspec.Struct):
    result: str = "unknown"


async def send(
    traffic: Sequence[SignedCallback],
    *,
    base_url: str,
    path: str = "/plivo/status",
    concurrency: int = 16,
) -> SendReport:
    """POST every callback to the server with ``concurrency`` clients; count the answers."""
    queue: asyncio.Queue[SignedCallback] = asyncio.Queue()
    for callback in traffic:
        queue.put_nowait(callback)
    by_status: dict[int, int] = {}
    by_result: dict[str, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            while not queue.empty():
                callback = queue.get_nowait()
                try:
                    response = await client.post(
                        path, content=callback.body, headers=callback.headers
                    )
                    code = response.status_code
                except httpx.TransportError:
                    code = 0
                by_status[code] = by_status.get(code, 0) + 1
                if code == 200:
                    try:
                        result = msgspec.json.decode(response.content, type=_Answer).result
                    except msgspec.DecodeError:
                        result = "unknown"
                    by_result[result] = by_result.get(result, 0) + 1

        started = asyncio.get_running_loop().time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = asyncio.get_running_loop().time() - started
    return SendReport(
        len(traffic), dict(sorted(by_status.items())), seconds, dict(sorted(by_result.items()))
    )
