"""The projectors the service runs, by name."""

from __future__ import annotations

from collections.abc import Sequence

from ledger.settings import Settings
from projections import alerts
from projections.analytics import DeliveryAnalyticsProjector
from projections.base import Projector
from projections.metrics import DailyMetricsProjector
from projections.status import MessageStatusProjector


def build_projectors(settings: Settings) -> tuple[Projector, ...]:
    """Every projector, configured from ``settings`` (the metrics day and hour boundaries'
    zone, the analytics tag key, the delivery-drop alert rule a rebuild recomputes)."""
    rule = alerts.AlertRule.from_settings(settings)
    return (
        MessageStatusProjector(),
        DailyMetricsProjector(timezone=settings.timezone),
        DeliveryAnalyticsProjector(
            timezone=settings.timezone,
            tag_key=settings.analytics_tag,
            derived=[alerts.recompute(rule)],
            derived_parameters=alerts.parameters(rule, None),
        ),
    )


#: Every projector with default settings (metrics days in UTC). A service reading its
#: settings should use :func:`build_projectors` so that ``LEDGER_TIMEZONE`` applies.
PROJECTORS: tuple[Projector, ...] = build_projectors(Settings())


def projector_named(name: str, projectors: Sequence[Projector] = PROJECTORS) -> Projector:
    """The projector called ``name``; raises KeyError naming the known ones."""
    for projector in projectors:
        if projector.name == name:
            return projector
    known = ", ".join(projector.name for projector in projectors)
    raise KeyError(f"no projection named {name!r}: known projections are {known}")
