"""The hourly cost-anomaly job on a synthetic history, its marks on the usage page, and the
alert webhook: delivered once, retried with back-off when the receiver fails, bounded."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from gateway.alerts import MAX_ATTEMPTS, alerts_deliver, retry_delay
from gateway.models import CostAlert, UsageHourly
from gateway.reporting.anomalies import detect_anomalies
from gateway.reporting.rollups import floor_hour
from gateway.services import team_create
from tests.factories import make_balancer
from tests.webhook_server import WebhookServer

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)


@pytest.fixture
def webhook(settings) -> Iterator[WebhookServer]:
    server = WebhookServer().start()
    settings.GATEWAY_ALERT_WEBHOOK_URL = server.url
    yield server
    server.stop()


def history(*, balancer, team, hours: int, last, spend, requests) -> None:
    """Hourly rollups for `hours` hours before `last`, then `last` itself with the given figures."""
    rng = random.Random(4)
    rows = []
    for back in range(hours, 0, -1):
        rows.append(
            UsageHourly(
                hour=last - back * HOUR,
                balancer=balancer,
                serving_name=balancer.serving_name,
                team_id=team.pk if team else None,
                requests=100 + rng.randint(-10, 10),
                cost_usd=Decimal("1.00") + Decimal(rng.randint(-10, 10)) / 100,
            )
        )
    rows.append(
        UsageHourly(
            hour=last,
            balancer=balancer,
            serving_name=balancer.serving_name,
            team_id=team.pk if team else None,
            requests=requests,
            cost_usd=spend,
        )
    )
    UsageHourly.objects.bulk_create(rows)


def test_an_hour_far_above_its_baseline_is_an_anomaly_and_an_ordinary_one_is_not(
    admin_client, webhook
):
    last = floor_hour(timezone.now()) - HOUR
    spiky, steady = make_balancer(name="spiky"), make_balancer(name="steady")
    team = team_create(name="research")
    # A week of ~$1 and ~100 requests an hour; then $6 over the same 100 requests.
    history(balancer=spiky, team=team, hours=168, last=last, spend=Decimal("6.00"), requests=100)
    # The other one: a busy hour within its usual spread ($1.08, 108 requests).
    history(balancer=steady, team=None, hours=168, last=last, spend=Decimal("1.08"), requests=108)

    raised = detect_anomalies()
    found = {(a.scope, a.subject, a.metric) for a in raised}
    assert found == {
        ("balancer", "balancer spiky", "spend"),
        ("team", "team research", "spend"),
    }
    spend = next(a for a in raised if a.scope == "balancer")
    assert spend.period_start == last and spend.value == Decimal("6.00")
    assert abs(spend.baseline - Decimal(1)) <= Decimal("0.02")  # the median of ~$1 hours
    assert Decimal("1.00") < spend.threshold < Decimal("6.00")
    assert detect_anomalies() == []  # the same hour again: nothing new

    # Marked on the usage page: listed, and the hour's bar flagged on the chart.
    page = admin_client.get("/usage/").content.decode()
    assert 'data-testid="usage-anomalies"' in page
    assert page.count('data-testid="anomaly-row"') == 2
    assert page.count('data-testid="chart-anomaly"') == 1
    assert "balancer spiky" in page

    # Sent to the webhook once each.
    assert alerts_deliver() == 2
    assert alerts_deliver() == 0
    kinds = sorted((m["kind"], m["scope"], m["metric"]) for m in webhook.received)
    assert kinds == [("anomaly", "balancer", "spend"), ("anomaly", "team", "spend")]
    assert all(abs(Decimal(m["baseline"]) - 1) <= Decimal("0.02") for m in webhook.received)


def test_too_short_a_history_gives_no_verdict(settings):
    last = floor_hour(timezone.now()) - HOUR
    history(
        balancer=make_balancer(), team=None, hours=10, last=last, spend=Decimal(50), requests=9000
    )
    assert detect_anomalies() == []


def test_a_request_rate_anomaly_is_its_own_alert(settings):
    last = floor_hour(timezone.now()) - HOUR
    balancer = make_balancer(name="chatty")
    history(balancer=balancer, team=None, hours=48, last=last, spend=Decimal("1.05"), requests=900)
    (alert,) = detect_anomalies()
    assert alert.metric == "requests" and alert.value == 900
    assert 95 <= alert.baseline <= 105


def test_a_failing_webhook_is_retried_with_back_off_and_never_blocks(webhook, settings):
    last = floor_hour(timezone.now()) - HOUR
    history(
        balancer=make_balancer(), team=None, hours=48, last=last, spend=Decimal(9), requests=100
    )
    (alert,) = detect_anomalies()
    webhook.status = 500
    now = timezone.now()
    assert alerts_deliver(now=now) == 0
    alert.refresh_from_db()
    assert alert.attempts == 1 and alert.delivered_at is None
    assert "500" in alert.last_error
    assert alert.next_attempt_at == now + retry_delay(1)
    assert alerts_deliver(now=now + timedelta(seconds=5)) == 0  # not due yet: not sent
    assert len(webhook.received) == 1

    # A receiver that hangs costs one POST its timeout, no more.
    webhook.status, webhook.delay = 200, 2.0
    settings.GATEWAY_ALERT_WEBHOOK_TIMEOUT_SECONDS = 0.3
    started = time.monotonic()
    assert alerts_deliver(now=now + retry_delay(1)) == 0
    assert time.monotonic() - started < 1.5
    alert.refresh_from_db()
    assert alert.attempts == 2 and "timed out" in alert.last_error.lower()

    webhook.delay = 0.0
    assert alerts_deliver(now=now + retry_delay(1) + retry_delay(2)) == 1
    alert.refresh_from_db()
    assert alert.delivered_at is not None and alert.attempts == 3 and alert.last_error == ""
    assert retry_delay(MAX_ATTEMPTS) == timedelta(hours=1)


def test_without_a_webhook_url_alerts_are_kept_for_the_pages_only(settings):
    settings.GATEWAY_ALERT_WEBHOOK_URL = ""
    last = floor_hour(timezone.now()) - HOUR
    history(
        balancer=make_balancer(), team=None, hours=48, last=last, spend=Decimal(9), requests=100
    )
    assert len(detect_anomalies()) == 1
    assert alerts_deliver() == 0
    assert CostAlert.objects.get().attempts == 0
