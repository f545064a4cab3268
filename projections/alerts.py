"""Delivery-drop alerts: Plivo's rule, made finer, derived from the analytics facts.

Every run (every 15 minutes by default, ``LEDGER_ALERT_EVERY``) compares the messages whose
first event falls in the last 60 minutes with those of the same 60 minutes on each of the
previous 7 days, per destination country, per carrier within a country, and per sender.
A group fires when both periods have at least ``min_messages`` messages with a final
outcome (``LEDGER_ALERT_MIN_MESSAGES``, 100) and its delivery rate has fallen below the
baseline by the threshold (``LEDGER_ALERT_DROP``: ``10pp`` percentage points, or ``20%``
of the baseline). The rate counts ``sent`` as delivered in the countries of
``LEDGER_SENT_AS_DELIVERED`` (Plivo gets no delivery reports there). The baseline pools
the seven windows: delivered over outcomes across all of them, so a quiet day weighs less.

The firing alerts are a table of the analytics view (``delivery_alerts``), replaced by each
run in one statement (a group still firing keeps its ``since``); a rebuild of the view
recomputes it. Groups newly firing and newly resolved go to the optional webhook, through
its outbox (:mod:`projections.alert_deliveries`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import httpx
import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from ledger.settings import DropThreshold, Settings
from ledger.webhooks import signed_headers
from projections.analytics import ALERTS, FACTS, placed
from projections.breakdown import DELIVERED, OUTCOMES

log = logging.getLogger(__name__)

#: A carrier or sender of ``*``: the alert covers every one.
EVERY: Final = "*"
WINDOW: Final = timedelta(minutes=60)
BASELINE_DAYS: Final = 7


class AlertRule(msgspec.Struct, frozen=True, kw_only=True):
    """The thresholds of the rule (see the module docstring)."""

    min_messages: int = 100
    drop: DropThreshold = DropThreshold("points", 10.0)
    window: timedelta = WINDOW
    baseline_days: int = BASELINE_DAYS
    sent_as_delivered: tuple[str, ...] = ("US", "CA")

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertRule:
        """The rule ``settings`` configure."""
        return cls(
            min_messages=settings.alert_min_messages,
            drop=settings.alert_drop,
            sent_as_delivered=settings.sent_as_delivered,
        )


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """One firing alert. ``carrier`` / ``sender`` None: every one (in ``country``; a sender's
    alert has ``country`` None). Rates are 0-1; ``drop`` is in percentage points."""

    country: str | None
    carrier: str | None
    sender: str | None
    window_start: datetime
    window_end: datetime
    messages: int
    delivery_rate: float
    baseline_rate: float
    drop: float
    since: datetime


class Alerts(msgspec.Struct, frozen=True):
    """``GET /v1/alerts``: the firing alerts, largest drop first."""

    alerts: list[Alert]


class Evaluation(msgspec.Struct, frozen=True):
    """What one run found: every alert firing, and the groups that started or stopped."""

    firing: list[Alert]
    started: list[Alert]
    resolved: list[Alert]


def _firing_threshold(drop: DropThreshold) -> sql.Composable:
    if drop.kind == "points":
        return sql.SQL("(baseline_rate - delivery_rate) * 100 >= %(alert_drop)s")
    return sql.SQL("delivery_rate <= baseline_rate * (1 - %(alert_drop)s)")


def _statement(rule: AlertRule) -> sql.Composed:
    """Replace the alerts table with the groups firing at ``{now}``; returns the
    rows kept or added (``started``: newly firing) and those removed (``resolved``)."""
    good = sql.SQL(
        "(status = ANY(%(alert_delivered)s)"
        " OR (status = 'sent' AND country = ANY(%(alert_counted)s)))"
    )
    decided = sql.SQL(
        "(status = ANY(%(alert_outcomes)s)"
        " OR (status = 'sent' AND country = ANY(%(alert_counted)s)))"
    )
    return sql.SQL(
        "WITH alert_recent AS (SELECT f.*, w.days_ago FROM generate_series(0, %(alert_days)s)"
        "  AS w(days_ago) JOIN {facts} AS f"
        "  ON f.first_event_at >= {now} - w.days_ago * interval '1 day' - %(alert_window)s"
        "  AND f.first_event_at < {now} - w.days_ago * interval '1 day'),"
        " alert_placed AS ({placed}),"
        " alert_groups AS (SELECT coalesce(country, {every}) AS country,"
        "  coalesce(carrier, {every}) AS carrier, coalesce(sender, {every}) AS sender,"
        "  count(*) FILTER (WHERE days_ago = 0 AND {decided}) AS messages,"
        "  count(*) FILTER (WHERE days_ago = 0 AND {good}) AS good,"
        "  count(*) FILTER (WHERE days_ago > 0 AND {decided}) AS baseline_messages,"
        "  count(*) FILTER (WHERE days_ago > 0 AND {good}) AS baseline_good"
        "  FROM alert_placed GROUP BY GROUPING SETS ((country), (country, carrier), (sender))),"
        " alert_rates AS (SELECT *, good::float8 / messages AS delivery_rate,"
        "  baseline_good::float8 / baseline_messages AS baseline_rate FROM alert_groups"
        "  WHERE messages >= %(alert_min)s AND baseline_messages >= %(alert_min)s),"
        " alert_firing AS (SELECT * FROM alert_rates WHERE {threshold}),"
        " alert_saved AS (INSERT INTO {alerts} AS a (country, carrier, sender, window_start,"
        "  window_end, messages, delivery_rate, baseline_rate, drop_points, since)"
        "  SELECT country, carrier, sender, {now} - %(alert_window)s, {now},"
        "  messages, delivery_rate, baseline_rate, (baseline_rate - delivery_rate) * 100,"
        "  {now} FROM alert_firing"
        "  ON CONFLICT (country, carrier, sender) DO UPDATE SET"
        "  window_start = excluded.window_start, window_end = excluded.window_end,"
        "  messages = excluded.messages, delivery_rate = excluded.delivery_rate,"
        "  baseline_rate = excluded.baseline_rate, drop_points = excluded.drop_points"
        "  RETURNING a.*, (xmax = 0) AS started),"
        " alert_resolved AS (DELETE FROM {alerts} AS a WHERE NOT EXISTS (SELECT FROM alert_firing"
        "  AS f WHERE (f.country, f.carrier, f.sender) = (a.country, a.carrier, a.sender))"
        "  RETURNING a.*)"
        " SELECT *, false AS resolved FROM alert_saved"
        " UNION ALL SELECT *, false, true FROM alert_resolved"
    ).format(
        facts=sql.Identifier(FACTS),
        placed=placed("alert_recent", ["days_ago"]),
        every=sql.Literal(EVERY),
        decided=decided,
        good=good,
        threshold=_firing_threshold(rule.drop),
        alerts=sql.Identifier(ALERTS),
        now=sql.SQL("coalesce(%(alert_now)s::timestamptz, now())"),
    )


def parameters(rule: AlertRule, now: datetime | None) -> dict[str, Any]:
    """The statement's parameters; ``now`` None is the database's clock."""
    return {
        "alert_now": now,
        "alert_window": rule.window,
        "alert_days": rule.baseline_days,
        "alert_min": rule.min_messages,
        "alert_drop": rule.drop.value,
        "alert_delivered": list(DELIVERED),
        "alert_outcomes": list(OUTCOMES),
        "alert_counted": list(rule.sent_as_delivered),
    }


def recompute(rule: AlertRule) -> sql.Composed:
    """The statement replacing the alerts table (run with :func:`parameters`; with ``now``
    None, as a rebuild of the analytics view runs it, at the database's clock)."""
    return _statement(rule)


def _alert(row: dict[str, Any]) -> Alert:
    def every(value: str) -> str | None:
        return None if value == EVERY else value

    return Alert(
        country=every(row["country"]),
        carrier=every(row["carrier"]),
        sender=every(row["sender"]),
        window_start=row["window_start"],
        window_end=row["window_end"],
        messages=row["messages"],
        delivery_rate=row["delivery_rate"],
        baseline_rate=row["baseline_rate"],
        drop=row["drop_points"],
        since=row["since"],
    )


def _by_drop(alerts: Sequence[Alert]) -> list[Alert]:
    return sorted(alerts, key=lambda a: (-a.drop, a.country or "", a.carrier or "", a.sender or ""))


async def evaluate(
    conn: psycopg.AsyncConnection[Any], rule: AlertRule, now: datetime | None = None
) -> Evaluation:
    """Run the rule at ``now`` (default: the database's clock) and replace the alerts."""
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(_statement(rule), parameters(rule, now))
        rows = await cursor.fetchall()
    firing = [_alert(r) for r in rows if not r["resolved"]]
    return Evaluation(
        firing=_by_drop(firing),
        started=_by_drop([_alert(r) for r in rows if r["started"]]),
        resolved=_by_drop([_alert(r) for r in rows if r["resolved"]]),
    )


async def firing_alerts(conn: psycopg.AsyncConnection[Any]) -> list[Alert]:
    """The alerts the last run left firing, largest drop first."""
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(ALERTS)))
        return _by_drop([_alert(row) for row in await cursor.fetchall()])


# --- The webhook ---------------------------------------------------------------------------


class AlertEvent(msgspec.Struct, frozen=True):
    """A webhook delivery: ``delivery_alert.firing`` or ``delivery_alert.resolved``."""

    type: Literal["delivery_alert.firing", "delivery_alert.resolved"]
    timestamp: datetime
    data: Alert


class WebhookFailed(Exception):
    """The receiver did not take a delivery after every retry."""


class AlertWebhook:
    """Posts alert deliveries to ``url``, signed with ``secret`` (Standard Webhooks),
    retrying a failed one ``attempts`` times with exponential backoff before the outbox
    (:mod:`projections.alert_deliveries`) tries it again later."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        attempts: int = 5,
        first_wait: float = 1.0,
        timeout: float = 10.0,
    ) -> None:
        self._url = url
        self._secret = secret
        self._attempts = attempts
        self._first_wait = first_wait
        self.timeout = timeout

    async def post(self, client: httpx.AsyncClient, webhook_id: str, body: bytes) -> None:
        """Deliver ``body`` as ``webhook_id``; raises :class:`WebhookFailed` (or the HTTP
        error) once every attempt has failed. Each attempt signs it with its own time."""
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=self._first_wait, max=60),
            retry=retry_if_exception_type((httpx.HTTPError, WebhookFailed)),
            reraise=True,
        ):
            with attempt:
                timestamp = int(time.time())
                response = await client.post(
                    self._url,
                    content=body,
                    headers=signed_headers(self._secret, webhook_id, timestamp, body),
                )
                if not response.is_success:
                    raise WebhookFailed(f"the receiver answered {response.status_code}")


def alert_events(evaluation: Evaluation) -> list[AlertEvent]:
    """The webhook events of a run: one per alert started, one per alert resolved."""
    at = datetime.now(UTC)
    return [
        *(AlertEvent("delivery_alert.firing", at, alert) for alert in evaluation.started),
        *(AlertEvent("delivery_alert.resolved", at, alert) for alert in evaluation.resolved),
    ]
