"""GET /api/usage/: the usage page's figures for scripts and dashboards."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from gateway.models import UsageEvent
from tests.factories import make_api_key, make_balancer

pytestmark = pytest.mark.django_db


def _event(
    balancer,
    *,
    key=None,
    route="main",
    status=200,
    cost="0.0010000000",
    prompt=10,
    completion=5,
    latency=100.0,
    minutes_ago=5,
) -> None:
    UsageEvent.objects.create(
        created_at=timezone.now() - timedelta(minutes=minutes_ago),
        request_id="r",
        endpoint="chat",
        balancer=balancer,
        serving_name=balancer.serving_name,
        route=route,
        instance="inst_a",
        model="m-a",
        api_key=key,
        status_code=status,
        latency_ms=latency,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=Decimal(cost),
    )


def test_usage_sums_rows_and_totals_from_the_events(admin_client) -> None:
    support, embed = make_balancer(name="support"), make_balancer(name="embed")
    key, _ = make_api_key(name="app")
    _event(support, key=key, route="smart", cost="0.0030000000", latency=300.0)
    _event(support, key=key, route="smart", cost="0.0030000000", status=502, latency=100.0)
    _event(support, route="fast", cost="0.0010000000")
    _event(embed, key=key, cost="0.0000000000", minutes_ago=60 * 30)  # outside the last 24 hours

    body = admin_client.get("/api/usage/").json()

    assert body["range"] == "24h"
    assert body["totals"] == {
        "requests": 3,
        "errors": 1,
        "error_rate": pytest.approx(1 / 3),
        "prompt_tokens": 30,
        "completion_tokens": 15,
        "cost_usd": "0.0070000000",
        "mean_latency_ms": pytest.approx(500 / 3),
        "streamed": 0,
    }
    smart, fast = body["rows"]  # costliest first
    assert (smart["balancer"], smart["route"], smart["api_key"], smart["api_key_id"]) == (
        "support",
        "smart",
        "app",
        key.pk,
    )
    assert (smart["requests"], smart["errors"], smart["cost_usd"], smart["mean_latency_ms"]) == (
        2,
        1,
        "0.0060000000",
        200.0,
    )
    assert smart["cost_share"] == pytest.approx(6 / 7, abs=1e-6)
    assert (fast["route"], fast["api_key_id"], fast["api_key"]) == ("fast", None, "")

    week = admin_client.get(
        "/api/usage/", {"range": "7d", "balancer": "embed", "key": str(key.pk)}
    ).json()
    assert [row["balancer"] for row in week["rows"]] == ["embed"] and week["totals"][
        "requests"
    ] == 1
    keyless = admin_client.get("/api/usage/", {"key": "none"}).json()
    assert [row["route"] for row in keyless["rows"]] == ["fast"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"range": "1y"}, "range"),
        ({"balancer": "nope"}, "balancer"),
        ({"key": "abc"}, "key"),
        ({"key": "999"}, "key"),
    ],
)
def test_bad_filters_are_a_400_naming_the_parameter(admin_client, params, field) -> None:
    response = admin_client.get("/api/usage/", params)
    assert response.status_code == 400
    assert field in response.content.decode()


def test_usage_needs_an_admin(client) -> None:
    assert client.get("/api/usage/").status_code in (401, 403)
