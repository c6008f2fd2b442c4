"""The hourly cost-anomaly job: each balancer's and team's last hour against its own baseline.

The statistic is gateway/engine/anomalies.py's (median + k x 1.4826 x MAD). This module
reads the hourly rollups, builds each subject's baseline (the hours before the hour
checked, up to GATEWAY_ANOMALY_BASELINE_HOURS, from its first hour with traffic, empty
hours as 0) and writes one CostAlert per subject, hour and metric (spend, requests) found
anomalous: the usage page marks them, gateway.alerts sends them to the webhook.

Production: Celery beat runs `gateway.tasks.detect_cost_anomalies` hourly; embedded mode
runs it from the gateway's tick. A second run for the same hour raises nothing new.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from balancers.models import Balancer
from gateway.engine.anomalies import Assessment, assess
from gateway.models import CostAlert, Team, UsageHourly
from gateway.reporting.rollups import floor_hour, rollup_usage

logger = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
METRICS = ("spend", "requests")


def _series(
    field: str, start: datetime, end: datetime
) -> dict[int, dict[datetime, tuple[Decimal, int]]]:
    """{subject pk: {hour: (spend, requests)}} over [start, end], subjects with a pk only."""
    rows = (
        UsageHourly.objects.filter(hour__gte=start, hour__lte=end)
        .exclude(**{f"{field}__isnull": True})
        .values("hour", field)
        .annotate(cost=Sum("cost_usd"), n=Sum("requests"))
        .order_by()
    )
    series: dict[int, dict[datetime, tuple[Decimal, int]]] = defaultdict(dict)
    for row in rows:
        series[row[field]][row["hour"]] = (row["cost"] or Decimal(0), row["n"] or 0)
    return series


def _assessments(
    values: dict[datetime, tuple[Decimal, int]], hour: datetime, start: datetime
) -> dict[str, Assessment]:
    before = [h for h in values if h < hour]
    if not before:
        return {}
    first = max(min(before), start)
    hours = []
    moment = first
    while moment < hour:
        hours.append(moment)
        moment += HOUR
    current = values.get(hour, (Decimal(0), 0))
    found = {}
    for index, metric in enumerate(METRICS):
        history = [float(values.get(h, (Decimal(0), 0))[index]) for h in hours]
        result = assess(
            history,
            float(current[index]),
            k=settings.GATEWAY_ANOMALY_K,
            min_excess=float(settings.GATEWAY_ANOMALY_MIN_SPEND_USD)
            if metric == "spend"
            else float(settings.GATEWAY_ANOMALY_MIN_REQUESTS),
            min_history=settings.GATEWAY_ANOMALY_MIN_HISTORY_HOURS,
        )
        if result is not None:
            found[metric] = result
    return found


def _describe(metric: str, value: float) -> str:
    return f"${value:.4f}" if metric == "spend" else f"{value:,.0f} requests"


def detect_anomalies(
    *, hour: datetime | None = None, now: datetime | None = None
) -> list[CostAlert]:
    """Check `hour` (default: the last complete UTC hour); the anomalies newly raised."""
    rollup_usage()
    hour = floor_hour(hour) if hour is not None else floor_hour(now or timezone.now()) - HOUR
    start = hour - settings.GATEWAY_ANOMALY_BASELINE_HOURS * HOUR
    raised: list[CostAlert] = []
    subjects: list[tuple[str, str, Any]] = [
        ("balancer", "balancer_id", Balancer),
        ("team", "team_id", Team),
    ]
    for scope, field, model in subjects:
        series = _series(field, start, hour)
        names = {obj.pk: obj.name for obj in model.objects.filter(pk__in=list(series))}
        for pk, values in series.items():
            if hour not in values:
                continue  # no traffic this hour: nothing can be too high
            for metric, result in _assessments(values, hour, start).items():
                if not result.anomalous:
                    continue
                label = f"{scope} {names.get(pk, f'#{pk} (deleted)')}"
                message = (
                    f"Cost anomaly: {label} had {_describe(metric, result.value)} in the hour from "
                    f"{hour:%Y-%m-%d %H:00} UTC, above its usual "
                    f"{_describe(metric, result.median)} "
                    f"(median of its baseline; anomaly above {_describe(metric, result.upper)})."
                )
                alert, created = CostAlert.objects.get_or_create(
                    kind=CostAlert.Kind.ANOMALY,
                    scope=scope,
                    subject_id=pk,
                    period_start=hour,
                    metric=metric,
                    defaults={
                        "subject": label[:200],
                        "value": Decimal(str(round(result.value, 10))),
                        "threshold": Decimal(str(round(result.upper, 10))),
                        "baseline": Decimal(str(round(result.median, 10))),
                        "message": message[:500],
                    },
                )
                if created:
                    logger.warning("%s", message)
                    raised.append(alert)
    return raised


def anomalies_between(*, start: datetime, end: datetime, limit: int = 50) -> list[CostAlert]:
    return list(
        CostAlert.objects.filter(
            kind=CostAlert.Kind.ANOMALY, period_start__gte=start, period_start__lt=end
        ).order_by("-period_start", "scope", "subject_id", "metric")[:limit]
    )
