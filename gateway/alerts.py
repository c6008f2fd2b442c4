"""The alert webhook: budget warnings, budgets reached and cost anomalies POSTed as JSON.

Off the request path: the jobs that raise alerts (gateway.budgets, gateway.reporting
.anomalies) only write CostAlert rows; `alerts_deliver()` (Celery beat every
GATEWAY_ALERT_DELIVERY_SECONDS, or the gateway's tick in embedded mode) sends them.

- Bounded: one POST waits at most GATEWAY_ALERT_WEBHOOK_TIMEOUT_SECONDS, a run sends at
  most BATCH alerts, and alerts older than MAX_AGE are not sent (a webhook configured
  today does not receive last month's).
- Retried: a failed POST (no answer, or a status other than 2xx) is tried again after
  30 s, 1, 2, 4... minutes (at most an hour apart), up to MAX_ATTEMPTS times.
- Safe with several workers: each alert is claimed with a conditional update of its
  attempt count before it is sent, so two runs never send the same attempt twice.

The body is Slack-compatible (`text`) and carries the alert's fields.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from gateway.models import CostAlert

logger = logging.getLogger(__name__)

BATCH = 50
MAX_ATTEMPTS = 8
MAX_AGE = timedelta(days=1)
FIRST_RETRY = timedelta(seconds=30)
LONGEST_RETRY = timedelta(hours=1)


def retry_delay(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed POST."""
    return min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LONGEST_RETRY)


def alert_payload(alert: CostAlert) -> dict[str, Any]:
    return {
        "text": f"[smart-balancers] {alert.message}",
        "id": alert.pk,
        "kind": alert.kind,
        "scope": alert.scope,
        "subject_id": alert.subject_id,
        "subject": alert.subject,
        "period_start": alert.period_start.isoformat(),
        "metric": alert.metric,
        "value": str(alert.value),
        "threshold": str(alert.threshold),
        "baseline": None if alert.baseline is None else str(alert.baseline),
        "message": alert.message,
        "created_at": alert.created_at.isoformat(),
    }


def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "smart-balancers-alerts"},
    )
    with urllib.request.urlopen(  # the operator's own webhook URL
        request, timeout=settings.GATEWAY_ALERT_WEBHOOK_TIMEOUT_SECONDS
    ) as response:
        if not 200 <= response.status < 300:
            raise urllib.error.HTTPError(url, response.status, "not 2xx", response.headers, None)


def alerts_deliver(*, now: datetime | None = None) -> int:
    """Send the alerts that are due; the number delivered."""
    url = settings.GATEWAY_ALERT_WEBHOOK_URL
    if not url:
        return 0
    now = now or timezone.now()
    due = (
        CostAlert.objects.filter(
            delivered_at__isnull=True, attempts__lt=MAX_ATTEMPTS, created_at__gte=now - MAX_AGE
        )
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("pk")[:BATCH]
    )
    delivered = 0
    for alert in list(due):
        attempt = alert.attempts + 1
        claimed = CostAlert.objects.filter(
            pk=alert.pk, attempts=alert.attempts, delivered_at__isnull=True
        ).update(attempts=F("attempts") + 1, next_attempt_at=now + retry_delay(attempt))
        if not claimed:
            continue  # another run has it
        try:
            _post(url, json.dumps(alert_payload(alert)).encode())
        except Exception as exc:  # any failure of the POST: retried later, never raised
            detail = f"{type(exc).__name__}: {exc}"[:300]
            CostAlert.objects.filter(pk=alert.pk).update(last_error=detail)
            logger.warning(
                "alert %s not delivered (attempt %d of %d): %s",
                alert.pk,
                attempt,
                MAX_ATTEMPTS,
                detail,
            )
        else:
            CostAlert.objects.filter(pk=alert.pk).update(delivered_at=timezone.now(), last_error="")
            delivered += 1
    return delivered
