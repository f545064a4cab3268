"""Prometheus metrics of the service, shared by every worker process.

With several worker processes, ``ledger serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a
fresh directory before they start, and a scrape sums what every worker recorded.
"""

from __future__ import annotations

import os

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
    multiprocess_mode="max",
)
PROJECTOR_SECONDS_BEHIND = Gauge(
    "ledger_projector_seconds_behind",
    "Age of the oldest event not yet applied to a view.",
    ["projector"],
    multiprocess_mode="max",
)
SEALED_POSITION = Gauge(
    "ledger_sealed_position",
    "Position of the last event sealed into a block.",
    multiprocess_mode="max",
)
SEAL_LAG_SECONDS = Gauge(
    "ledger_seal_lag_seconds",
    "Age of the oldest event not yet sealed (0 when every event is sealed).",
    multiprocess_mode="max",
)
DEAD_LETTERS = Gauge(
    "ledger_dead_letters",
    "Unresolved events a projector could not apply.",
    ["projector"],
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


def exposition() -> tuple[bytes, str]:
    """The current metrics in Prometheus text format, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
