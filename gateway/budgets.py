"""Budgets off the request path: their exact spend, the counters reconciled, their alerts.

`budget_statuses()` reads each budget's spend in its current period from the hourly
rollups (exact once `rollup_usage()` has run: it sums every usage event written, and the
rollups outlive the raw events, so a whole month is there). `budgets_reconcile()` runs it,
raises the request path's counters (gateway/hotpath/budgets.py) to that exact spend, and
raises a budget warning or a budget-reached alert (gateway.models.CostAlert, once per
budget, period and level) for the pages and the webhook (gateway.alerts).

Production: Celery beat runs `gateway.tasks.reconcile_budgets` every
GATEWAY_BUDGET_RECONCILE_SECONDS; embedded mode runs it from the gateway's tick.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Q, Sum
from django.utils import timezone

from gateway.engine.budgets import period_end, period_key, period_start, usd_to_units
from gateway.hotpath import budgets as counters
from gateway.models import Budget, CostAlert, UsageHourly
from gateway.reporting.rollups import rollup_usage

logger = logging.getLogger(__name__)

OK, WARNING, REACHED = "ok", "warning", "reached"


@dataclass
class BudgetStatus:
    budget: Budget
    start: datetime
    end: datetime
    spent: Decimal  # exact, from the usage events

    @property
    def limit(self) -> Decimal:
        return self.budget.limit_usd

    @property
    def warn_at(self) -> Decimal:
        return self.budget.limit_usd * self.budget.warn_share

    @property
    def share(self) -> float:
        return float(self.spent / self.limit) if self.limit else 0.0

    @property
    def share_percent(self) -> float:
        return self.share * 100

    @property
    def bar_percent(self) -> float:
        return min(self.share_percent, 100.0)

    @property
    def state(self) -> str:
        if not self.budget.enabled:
            return OK
        if self.spent >= self.limit:
            return REACHED
        return WARNING if self.spent >= self.warn_at else OK

    @property
    def css(self) -> str:
        return {WARNING: "warn", REACHED: "bad"}.get(self.state, "ok")

    @property
    def period_label(self) -> str:
        return (
            f"{self.start:%d %b %Y}"
            if self.budget.period == Budget.Period.DAILY
            else (f"{self.start:%B %Y}")
        )


def _subject(budget: Budget) -> Q:
    if budget.team_id is not None:
        return Q(team_id=budget.team_id)
    if budget.api_key_id is not None:
        return Q(api_key_id=budget.api_key_id)
    return Q(balancer_id=budget.balancer_id)


def budget_spent(*, budget: Budget, start: datetime, end: datetime) -> Decimal:
    found = UsageHourly.objects.filter(_subject(budget), hour__gte=start, hour__lt=end).aggregate(
        cost=Sum("cost_usd")
    )["cost"]
    return found or Decimal(0)


def budget_list() -> Any:
    return Budget.objects.select_related("team", "api_key", "balancer").order_by("period", "pk")


def budget_statuses(
    *, budgets: Iterable[Budget] | None = None, now: datetime | None = None
) -> list[BudgetStatus]:
    """Each budget's spend in its current period (call rollup_usage() first for the latest)."""
    now = now or timezone.now()
    statuses = []
    for budget in budget_list() if budgets is None else budgets:
        start, end = period_start(budget.period, now), period_end(budget.period, now)
        statuses.append(
            BudgetStatus(
                budget=budget,
                start=start,
                end=end,
                spent=budget_spent(budget=budget, start=start, end=end),
            )
        )
    return statuses


def budgets_reconcile(*, now: datetime | None = None) -> list[BudgetStatus]:
    """Sum the usage written so far, raise the counters to it, raise the alerts it calls for."""
    rollup_usage()
    now = now or timezone.now()
    statuses = budget_statuses(budgets=budget_list().filter(enabled=True), now=now)
    for status in statuses:
        _raise_counter(status, now)
        _alert(status)
    return statuses


def _raise_counter(status: BudgetStatus, now: datetime) -> None:
    budget = status.budget
    name = period_key(budget.period, now)
    units = usd_to_units(status.spent)
    if not settings.REDIS_URL:
        counters.raise_local(budget.pk, name, units)
        return
    from gateway.hotpath.redis_client import RedisUnavailable, call_sync

    ttl = counters.TTL_SECONDS.get(budget.period, counters.TTL_SECONDS["monthly"])
    try:
        call_sync(
            lambda client: client.eval(
                counters.RAISE_TO, 1, counters.counter_name(budget.pk, name), units, ttl
            )
        )
    except RedisUnavailable:
        pass  # the next run tries again; the breaker logs the outage


def _alert(status: BudgetStatus) -> CostAlert | None:
    state = status.state
    if state == OK:
        return None
    budget = status.budget
    reached = state == REACHED
    kind = CostAlert.Kind.BUDGET_REACHED if reached else CostAlert.Kind.BUDGET_WARNING
    period = "today's" if budget.period == Budget.Period.DAILY else "this month's"
    if reached:
        then = (
            "requests are refused (429 insufficient_quota)"
            if budget.action == Budget.Action.REFUSE
            else "requests go to the cheapest route"
        )
        message = (
            f"The {budget.subject_label} has spent ${status.spent:.4f} of {period} "
            f"${budget.limit_usd} budget: {then} until the period ends."
        )
    else:
        message = (
            f"The {budget.subject_label} has spent ${status.spent:.4f}, "
            f"{status.share_percent:.0f}% of {period} ${budget.limit_usd} budget "
            f"(warning at {budget.warn_share * 100:.0f}%)."
        )
    alert, created = CostAlert.objects.get_or_create(
        kind=kind,
        scope=budget.scope,
        subject_id=budget.subject_id,
        period_start=status.start,
        metric="spend",
        defaults={
            "subject": budget.subject_label[:200],
            "value": status.spent,
            "threshold": budget.limit_usd if reached else status.warn_at,
            "message": message[:500],
            "budget": budget,
        },
    )
    if created:
        logger.warning("%s", message)
    return alert


def budget_alerts(*, since: datetime, limit: int = 50) -> list[CostAlert]:
    return list(
        CostAlert.objects.filter(created_at__gte=since)
        .exclude(kind=CostAlert.Kind.ANOMALY)
        .order_by("-created_at", "-pk")[:limit]
    )
