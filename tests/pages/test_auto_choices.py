"""The balancer list shows the auto serving names (goal names and auto-mode balancers) with the
models they chose over the last 24 hours, from the usage events."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from gateway.models import UsageEvent
from tests.factories import make_balancer

pytestmark = pytest.mark.django_db


def served(serving_name: str, model: str, *, balancer=None, hours_ago: float = 1, status=200):
    UsageEvent.objects.create(
        created_at=timezone.now() - timedelta(hours=hours_ago),
        request_id="r",
        endpoint="chat",
        balancer=balancer,
        serving_name=serving_name,
        route="auto",
        instance="x",
        model=model,
        status_code=status,
        latency_ms=10.0,
        prompt_tokens=1,
        completion_tokens=1,
        cost_usd=Decimal("0"),
    )


def test_the_list_shows_each_auto_serving_name_and_the_models_it_chose(admin_client):
    UsageEvent.objects.all().delete()
    published = make_balancer(name="support-auto", serving_name="support-auto", routing_mode="auto")
    ordered = make_balancer(name="plain", serving_name="plain")
    for model in ("cheap-model", "cheap-model", "premium-model"):
        served("auto", model)
    served("auto-best", "premium-model")
    served("auto-best", "old-model", hours_ago=30)  # outside the window
    served("auto-cheap", "", status=502)  # nothing served
    served("support-auto", "support-a", balancer=published)
    served("plain", "not-auto", balancer=ordered)  # not an auto serving name

    page = admin_client.get("/balancers/")
    assert page.status_code == 200
    choices = page.context["auto_choices"]
    assert [(c.name, c.preference, c.requests, c.models, c.balancer) for c in choices] == [
        ("auto", "balanced", 3, [("cheap-model", 2), ("premium-model", 1)], ""),
        ("auto-best", "quality", 1, [("premium-model", 1)], ""),
        ("support-auto", "balanced", 1, [("support-a", 1)], "support-auto"),
    ]
    html = page.content.decode()
    assert 'data-testid="auto-choice-auto"' in html and "cheap-model · 2" in html
    assert "/balancers/support-auto/board/" in html
    assert "not-auto" not in html and "old-model" not in html
