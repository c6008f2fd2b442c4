from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.beat import PersistentScheduler
from celery.schedules import crontab
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("smart_balancers")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class HeartbeatScheduler(PersistentScheduler):
    """Beat's scheduler, touching `<schedule file>.heartbeat` on every tick: the health check of
    the beat container (compose.yaml, deploy/k8s/beat.yaml) fails when the file grows old, that
    is when beat's loop is stuck or gone. A tick comes at least every beat_max_interval."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        Path(f"{self.schedule_filename}.heartbeat").touch()
        return float(super().tick(*args, **kwargs))


app.conf.beat_scheduler = "config.celery:HeartbeatScheduler"
app.conf.beat_max_interval = 30  # seconds; the health check allows 120 s without a tick

# The intervals come from the settings module, so a bad value fails there, naming the
# variable (config/env.py), like every other setting.
app.conf.beat_schedule = {
    # Active health: GET /models on every enabled instance; unavailable ones are
    # cooled down everywhere (through Redis) until the next probe.
    "probe-instances": {
        "task": "gateway.tasks.probe_instances",
        "schedule": settings.GATEWAY_PROBE_SECONDS,
    },
    # Usage rollups: new usage events summed into their hours (the usage page reads
    # these), and raw events past GATEWAY_USAGE_RETENTION_DAYS deleted.
    "rollup-usage": {
        "task": "gateway.tasks.rollup_usage",
        "schedule": settings.GATEWAY_ROLLUP_SECONDS,
    },
    # Stored /v1/responses answers past GATEWAY_RESPONSES_RETENTION_DAYS deleted (reads
    # already ignore them); hourly is plenty for a retention counted in days.
    "purge-stored-responses": {
        "task": "gateway.tasks.purge_stored_responses",
        "schedule": 3600.0,
    },
    # Budgets: their exact spend summed from the usage events, the request path's Redis
    # counters raised to it, budget warnings and budgets reached raised (docs/cost.md).
    "reconcile-budgets": {
        "task": "gateway.tasks.reconcile_budgets",
        "schedule": settings.GATEWAY_BUDGET_RECONCILE_SECONDS,
    },
    # Cost anomalies: each balancer's and team's last complete hour against its own
    # baseline (median + k x MAD); run every hour, a second run for an hour adds nothing.
    "detect-cost-anomalies": {
        "task": "gateway.tasks.detect_cost_anomalies",
        "schedule": crontab(minute=2),
    },
    # The alert webhook: due alerts POSTed, failed ones retried with back-off.
    "deliver-alerts": {
        "task": "gateway.tasks.deliver_alerts",
        "schedule": settings.GATEWAY_ALERT_DELIVERY_SECONDS,
    },
}
