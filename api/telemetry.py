"""Prometheus metrics of the service, shared by every process of ``ledger serve``.

``ledger serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before it starts
its HTTP workers and its projector process, and a scrape of any HTTP worker sums what every
one of them recorded (counters and histograms of processes that died and were replaced
included). The gauges are set by whichever HTTP worker answers a probe or a scrape, just
before it answers, so a scrape shows the most recently written value (``mostrecent``), not
the largest any worker, alive or dead, ever wrote.
"""

from __future__ import annotations

import os
from typing import Literal, get_args

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

CALLBACKS = Counter(
    "ledger_callbacks_total",
    "Status callbacks received, by outcome.",
    ["outcome"],
)
CallbackOutcome = Literal[
    "appended",
    "duplicate",
    "nonce_reused",
    "bad_signature",
    "malformed",
    "unsupported_media_type",
    "too_large",
    "unavailable",
]
#: :data:`CALLBACKS`' child for each outcome, bound once: ``labels()`` looks the child up
#: under a lock on every call, and the callback route counts every request.
CALLBACK_OUTCOMES: dict[CallbackOutcome, Counter] = {
    outcome: CALLBACKS.labels(outcome) for outcome in get_args(CallbackOutcome)
}
ACK_SECONDS = Histogram(
    "ledger_callback_ack_seconds",
    "Time from receiving a callback to answering it.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 8.0),
)
APPEND_BATCH = Histogram(
    "ledger_append_batch_events",
    "Events per group-commit transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
PROJECTOR_EVENTS_BEHIND = Gauge(
    "ledger_projector_events_behind",
    "Events in the ledger not yet applied to a view.",
    ["projector"],
    multiprocess_mode="mostrecent",
)
PROJECTOR_SECONDS_BEHIND = Gauge(
    "ledger_projector_seconds_behind",
    "Age of the oldest event not yet applied to a view.",
    ["projector"],
    multiprocess_mode="mostrecent",
)
SEALED_POSITION = Gauge(
    "ledger_sealed_position",
    "Position of the last event sealed into a block.",
    multiprocess_mode="mostrecent",
)
SEAL_LAG_SECONDS = Gauge(
    "ledger_seal_lag_seconds",
    "Age of the oldest event not yet sealed (0 when every event is sealed).",
    multiprocess_mode="mostrecent",
)
DEAD_LETTERS = Gauge(
    "ledger_dead_letters",
    "Unresolved events a projector could not apply (counted up to 1,000).",
    ["projector"],
    multiprocess_mode="mostrecent",
)

PROJECTED_EVENTS = Counter(
    "ledger_projected_events_total",
    "Events applied to a view by this server's projector process.",
    ["projector"],
)
PROJECTOR_STARTS = Counter(
    "ledger_projector_process_starts_total",
    "Times the projector process was started (more than one: it died and was restarted).",
)

SENDS = Counter(
    "ledger_sends_total",
    "Send requests answered, by outcome (submitted, failed, unknown, pending, conflict).",
    ["outcome"],
)
SEND_OUTCOMES_UNKNOWN = Gauge(
    "ledger_send_outcomes_unknown",
    "Send requests whose outcome is unknown (message.send_outcome_unknown in the ledger).",
    multiprocess_mode="max",
)


DELIVERY_ALERTS = Gauge(
    "ledger_delivery_alerts_firing",
    "Delivery-drop alerts firing (see GET /v1/alerts).",
    multiprocess_mode="max",
)
DELIVERY_ALERT_DROP = Gauge(
    "ledger_delivery_alert_drop_points",
    "How far a firing alert's delivery rate is below its baseline, in percentage points;"
    " '*' labels every carrier or sender.",
    ["country", "carrier", "sender"],
    multiprocess_mode="max",
)
ALERT_DELIVERIES_PENDING = Gauge(
    "ledger_alert_webhook_pending",
    "Alert webhook deliveries the receiver has not taken yet (retried every minute).",
    multiprocess_mode="max",
)


def exposition() -> tuple[bytes, str]:
    """The current metrics in Prometheus text format, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
