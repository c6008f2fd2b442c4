from __future__ import annotations

import asyncio

from celery import shared_task


@shared_task(ignore_result=True)
def probe_instances() -> int:
    """Probe every enabled instance (beat: every GATEWAY_PROBE_SECONDS)."""
    from gateway.probes import probe_all
    from gateway.upstream.http import close_pools

    async def probe_and_close() -> int:
        try:
            return len(await probe_all())
        finally:
            close_pools()  # this loop ends with the task: leave no idle connection behind

    return asyncio.run(probe_and_close())


@shared_task(ignore_result=True)
def rollup_usage() -> int:
    """Sum new usage events into hourly rollups and prune old raw events (beat: every
    GATEWAY_ROLLUP_SECONDS)."""
    from gateway.reporting.rollups import rollup_usage as run

    return run().events


@shared_task(ignore_result=True)
def purge_stored_responses() -> int:
    """Delete stored /v1/responses answers past their retention (beat: hourly)."""
    from gateway.services import stored_responses_purge

    return stored_responses_purge()


@shared_task(ignore_result=True)
def reconcile_budgets() -> int:
    """Budgets' exact spend from the usage events, counters raised to it, alerts raised
    (beat: every GATEWAY_BUDGET_RECONCILE_SECONDS)."""
    from gateway.budgets import budgets_reconcile

    return len(budgets_reconcile())


@shared_task(ignore_result=True)
def detect_cost_anomalies() -> int:
    """Each balancer's and team's last hour against its baseline (beat: hourly)."""
    from gateway.reporting.anomalies import detect_anomalies

    return len(detect_anomalies())


@shared_task(ignore_result=True)
def deliver_alerts() -> int:
    """POST due alerts to GATEWAY_ALERT_WEBHOOK_URL (beat: every GATEWAY_ALERT_DELIVERY_SECONDS)."""
    from gateway.alerts import alerts_deliver

    return alerts_deliver()
