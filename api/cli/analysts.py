"""Analysts' reads: ``ledger metrics`` and ``ledger alerts``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import rich_click as click
from rich.table import Table

from api.breakdown import BadQuery, breakdown_csv, breakdown_query
from api.cli.common import (
    CommandError,
    pass_settings,
    print_json,
    read,
    show,
    table,
    tag_option,
)
from api.cli.times import NotATime, day_in, parse_when
from api.reports import RangeError, check_range, metrics_csv
from ledger.settings import Settings
from projections.alerts import Alert, Alerts, firing_alerts
from projections.breakdown import Breakdown, breakdown
from projections.queries import DELIVERY_OUTCOMES, IN_FLIGHT, daily_metrics, histogram_quantile
from projections.views import DailyMetrics

#: Statuses that always have a column; any other final status seen in the range gets one too,
#: and the rest (queued, sent, …) are summed as "in flight", so that the columns add up to
#: the messages.
_ALWAYS = ("delivered", "undelivered", "failed", "expired")
_DAYS_BY_DEFAULT = 7


def _day(option: str, text: str, settings: Settings, now: datetime) -> date:
    try:
        return day_in(parse_when(text, now=now, zone=settings.zone), settings.zone)
    except NotATime as error:
        raise CommandError(f"{option} {error}") from None


class _Totals:
    """Sums over the days shown, for the table's last row."""

    def __init__(self, rows: Sequence[DailyMetrics]) -> None:
        self.messages = sum(row.messages for row in rows)
        self.statuses: dict[str, int] = {}
        for row in rows:
            for name, count in row.statuses.items():
                self.statuses[name] = self.statuses.get(name, 0) + count
        outcomes = sum(self.statuses.get(name, 0) for name in DELIVERY_OUTCOMES)
        self.delivery_rate = self.statuses.get("delivered", 0) / outcomes if outcomes else None
        histogram = [sum(counts) for counts in zip(*_histograms(rows), strict=True)]
        self.p50 = histogram_quantile(0.5, histogram) if histogram else None
        self.p95 = histogram_quantile(0.95, histogram) if histogram else None
        self.units = sum(row.units for row in rows)
        self.amount = sum((row.total_amount for row in rows), Decimal(0))


def _histograms(rows: Sequence[DailyMetrics]) -> list[list[int]]:
    return [[bucket.count for bucket in row.latency_histogram] for row in rows]


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def metrics_table(rows: Sequence[DailyMetrics], zone: str) -> Table:
    """One line per day and a total: every message counted once, at its current status."""
    extra = sorted({name for row in rows for name in row.statuses} - set(_ALWAYS) - set(IN_FLIGHT))
    counted = (*_ALWAYS, *extra)
    numbers = ("messages", *counted, "in flight", "rate", "p50 s", "p95 s", "units", "amount")
    grid = table(f"day ({zone})", *numbers, right=numbers)
    for row in rows:
        grid.add_row(
            row.day.isoformat(),
            str(row.messages),
            *(str(row.statuses.get(name, 0)) for name in counted),
            str(sum(row.statuses.get(name, 0) for name in IN_FLIGHT)),
            _rate(row.delivery_rate),
            _seconds(row.p50_seconds),
            _seconds(row.p95_seconds),
            str(row.units),
            str(row.total_amount),
        )
    total = _Totals(rows)
    grid.add_section()
    grid.add_row(
        "total",
        str(total.messages),
        *(str(total.statuses.get(name, 0)) for name in counted),
        str(sum(total.statuses.get(name, 0) for name in IN_FLIGHT)),
        _rate(total.delivery_rate),
        _seconds(total.p50),
        _seconds(total.p95),
        str(total.units),
        str(total.amount),
        style="bold",
    )
    grid.caption = (
        "in flight: submitted, queued, sent or no status yet. "
        "rate: delivered / (delivered + undelivered + failed + rejected + expired). "
        "p50/p95: time from the first event to delivered."
    )
    grid.caption_justify = "left"
    return grid


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def breakdown_table(result: Breakdown, zone: str) -> Table:
    """One line per group, most messages first, with both delivery rates."""
    heads = [f"hour ({zone})" if name == "hour" else name.replace("_", " ") for name in result.by]
    numbers = (
        "messages",
        "delivered",
        "rate",
        "rate (sent=delivered)",
        "queue p50 ms",
        "queue p95 ms",
        "carrier p50 ms",
        "carrier p95 ms",
        "amount",
        "per delivered",
    )
    grid = table(*heads, *numbers, right=numbers)
    for row in result.rows:
        dims = [getattr(row, name) for name in result.by]
        grid.add_row(
            *(d.strftime("%Y-%m-%d %H:%M") if isinstance(d, datetime) else d or "-" for d in dims),
            str(row.messages),
            str(row.delivered),
            _rate(row.delivery_rate),
            _rate(row.delivery_rate_with_sent),
            _ms(row.queue_p50_ms),
            _ms(row.queue_p95_ms),
            _ms(row.carrier_p50_ms),
            _ms(row.carrier_p95_ms),
            str(row.amount),
            "-" if row.cost_per_delivered is None else str(row.cost_per_delivered),
        )
    grid.caption = (
        "rate: delivered / final outcomes; sent=delivered: also counting sent as delivered in "
        "LEDGER_SENT_AS_DELIVERED countries. queue: queued -> sent; carrier: sent -> delivered. "
        "per delivered: amount / (delivered or sent-as-delivered)."
    )
    grid.caption_justify = "left"
    return grid


@click.command()
@click.option("--start", metavar="DAY", help="First day (default: 6 days before --end).")
@click.option(
    "--end", metavar="DAY", help="Last day, included (default: today in LEDGER_TIMEZONE)."
)
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a fixed set of columns.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, as the HTTP API does.")
@tag_option
@click.option(
    "--by",
    metavar="DIMS",
    help="Break down by country, carrier, sender, hour, error_family and/or tag (comma list),"
    " as GET /v1/metrics/breakdown, instead of per day.",
)
@click.option("--country", metavar="CC", help="With --by: only these countries (comma list).")
@click.option("--carrier", metavar="NAME", help="With --by: only these carriers.")
@click.option("--sender", metavar="FROM", help="With --by: only these senders.")
@click.option("--status", metavar="STATUS", help="With --by: only these current statuses.")
@click.option("--limit", type=int, default=100, show_default=True, help="With --by: rows.")
@pass_settings
def metrics(
    settings: Settings,
    *,
    start: str | None,
    end: str | None,
    as_csv: bool,
    as_json: bool,
    tags: dict[str, str],
    by: str | None,
    country: str | None,
    carrier: str | None,
    sender: str | None,
    status: str | None,
    limit: int,
) -> None:
    """Daily delivery metrics: messages, outcomes, delivery rate, time to deliver, charges.

    A message counts on the day of its first event (in LEDGER_TIMEZONE), once, at its
    current status; "in flight" holds those without a final status yet, so the status
    columns add up to the messages. Days are written 2026-11-23, today, yesterday or 7d
    (seven days ago). The CSV has the same columns whatever the range holds: one per known
    status and per documented Plivo error code, plus status_other and error_other.

    Examples:

    ```
    ledger metrics                                   # the last 7 days
    ledger metrics --start 2026-11-01 --end 2026-11-30 --csv > november.csv
    ledger metrics --start yesterday --end yesterday --json
    ledger metrics --tag campaign=spring             # messages sent with that tag
    ledger metrics --by country,carrier              # delivery by destination network
    ledger metrics --by sender,hour --country IN --csv
    ```

    With --by, messages count by the hour of their first event, and the rate is shown
    both strictly and counting sent as delivered where Plivo gets no delivery reports
    (LEDGER_SENT_AS_DELIVERED).
    """
    if as_csv and as_json:
        raise CommandError("--csv and --json are exclusive: choose one")
    now = datetime.now(UTC)
    end_day = _day("--end", end, settings, now) if end else day_in(now, settings.zone)
    start_day = (
        _day("--start", start, settings, now)
        if start
        else end_day - timedelta(days=_DAYS_BY_DEFAULT - 1)
    )
    try:
        check_range(start_day, end_day, settings.metrics_max_days)
    except RangeError as error:
        raise CommandError(str(error)) from None
    if by is not None:
        _breakdown(
            settings,
            start_day,
            end_day,
            as_csv=as_csv,
            as_json=as_json,
            by=by,
            country=country,
            carrier=carrier,
            sender=sender,
            tag=_analytics_tag(settings, tags),
            status=status,
            limit=limit,
        )
        return
    rows = read(
        settings,
        lambda conn: daily_metrics(conn, start_day, end_day, tags=tags, timezone=settings.timezone),
    )
    if as_csv:
        sys.stdout.write(metrics_csv(rows))
    elif as_json:
        print_json(rows)
    elif not rows:
        show(f"no messages from {start_day} to {end_day} (days in {settings.timezone})")
    else:
        show(metrics_table(rows, settings.timezone))


def _analytics_tag(settings: Settings, tags: dict[str, str]) -> str | None:
    """The breakdown's tag filter: the value of LEDGER_ANALYTICS_TAG, the tag it counts by."""
    others = sorted(set(tags) - {settings.analytics_tag})
    if others:
        raise CommandError(
            f"with --by, --tag filters by the tag the breakdown counts, {settings.analytics_tag}"
            f" (LEDGER_ANALYTICS_TAG), not {others[0]}: use --tag {settings.analytics_tag}=VALUE"
        )
    return tags.get(settings.analytics_tag)


def _breakdown(
    settings: Settings,
    start_day: date,
    end_day: date,
    *,
    as_csv: bool,
    as_json: bool,
    limit: int,
    **filters: str | None,
) -> None:
    try:
        query = breakdown_query(
            settings, start=start_day.isoformat(), end=end_day.isoformat(), limit=limit, **filters
        )
    except BadQuery as error:
        raise CommandError(f"--{error.field} {error}") from None
    result = read(settings, lambda conn: breakdown(conn, query))
    if as_csv:
        sys.stdout.write(breakdown_csv(result))
    elif as_json:
        print_json(result)
    elif not result.rows:
        show(f"no messages from {start_day} to {end_day} (hours in {settings.timezone})")
    else:
        show(breakdown_table(result, settings.timezone))


def alerts_table(alerts: Sequence[Alert], zone: str) -> Table:
    """One line per firing alert, largest drop first."""
    numbers = ("messages", "rate", "baseline", "drop pp")
    grid = table("country", "carrier", "sender", *numbers, f"since ({zone})", right=numbers)
    for alert in alerts:
        grid.add_row(
            alert.country or "all",
            alert.carrier or "all",
            alert.sender or "all",
            str(alert.messages),
            _rate(alert.delivery_rate),
            _rate(alert.baseline_rate),
            f"{alert.drop:.1f}",
            alert.since.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M"),
        )
    grid.caption = (
        "the last 60 min against the same 60 min of the previous 7 days; messages: final "
        "outcomes in the window (sent counts in LEDGER_SENT_AS_DELIVERED countries)."
    )
    grid.caption_justify = "left"
    return grid


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON, as GET /v1/alerts.")
@pass_settings
def alerts(settings: Settings, *, as_json: bool) -> None:
    """Delivery-drop alerts firing now, largest drop first.

    A country, a carrier in a country, or a sender fires when its delivery rate over the
    last 60 minutes is LEDGER_ALERT_DROP (10pp by default) below the same 60 minutes over
    the previous 7 days, with LEDGER_ALERT_MIN_MESSAGES (100) final outcomes in both. The
    service re-evaluates them every LEDGER_ALERT_EVERY (15m).

    ```
    ledger alerts
    ledger alerts --json
    ```
    """
    found = read(settings, firing_alerts)
    if as_json:
        print_json(Alerts(alerts=found))
    elif not found:
        show("no delivery alert is firing")
    else:
        show(alerts_table(found, settings.timezone))
