"""Failover cost impact: the extra spend of traffic that failed over to a pricier route, per
incident."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db.models import Q
from django.utils import timezone

from gateway.models import UsageEvent, UsageHourly
from gateway.reporting.failover import failover_incidents
from tests.factories import make_balancer, make_instance
from tests.upstream_server import Behaviour

_ids = itertools.count(1)


def served(
    balancer: Any, at: Any, route: str, prompt: int, completion: int, cost: str, **extra: Any
):
    return UsageEvent.objects.create(
        created_at=at,
        request_id=f"fo-{next(_ids)}",
        endpoint="chat",
        balancer=balancer,
        serving_name=balancer.serving_name,
        decided_route="primary",
        route=route,
        instance=f"inst-{route}",
        model=route,
        status_code=200,
        latency_ms=100.0,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=Decimal(cost),
        **extra,
    )


@pytest.fixture
def incident(db: Any) -> Any:
    """A balancer whose primary ($1/$2 per 1M) went away twice, its fallback at $10/$30."""
    UsageEvent.objects.all().delete()
    UsageHourly.objects.all().delete()
    primary = make_instance(input_price_per_million="1", output_price_per_million="2")
    fallback = make_instance(input_price_per_million="10", output_price_per_million="30")
    balancer = make_balancer(
        serving_name="fo-cost",
        routes=[
            {
                "name": "primary",
                "intent": "1.",
                "instance": primary,
                "priority": 1,
                "is_default": True,
            },
            {"name": "fallback", "intent": "2.", "instance": fallback, "priority": 2},
        ],
    )
    t = timezone.now() - timedelta(minutes=50)
    served(balancer, t, "primary", 1000, 500, "0.002")  # before: the primary answers
    # Incident 1, from t+1 to t+4 (the primary answers again): two requests on the fallback.
    served(balancer, t + timedelta(minutes=1), "fallback", 1000, 500, "0.025")
    served(balancer, t + timedelta(minutes=2), "fallback", 2000, 1000, "0.05")
    UsageEvent.objects.create(  # every attempt failed: no route answered, nothing spent
        created_at=t + timedelta(minutes=3),
        request_id="fo-failed",
        endpoint="chat",
        balancer=balancer,
        serving_name=balancer.serving_name,
        decided_route="primary",
        status_code=502,
        latency_ms=10.0,
    )
    served(balancer, t + timedelta(minutes=4), "primary", 1000, 500, "0.002")
    served(balancer, t + timedelta(minutes=5), "primary", 1000, 500, "0.002")
    # Incident 2, from t+10, still going on.
    served(balancer, t + timedelta(minutes=10), "fallback", 100, 100, "0.004")
    return balancer, t


def test_each_incident_counts_its_failed_over_requests_and_their_extra_spend(incident) -> None:
    _, t = incident
    report = failover_incidents(
        start=t - timedelta(hours=1), end=timezone.now() + timedelta(seconds=1)
    )
    assert report.count == 2 and report.requests == 3
    ongoing, ended = report.incidents  # newest first
    assert (ended.primary, ended.fallbacks, ended.requests) == ("primary", ["fallback"], 2)
    assert (ended.started_at, ended.ended_at) == (
        t + timedelta(minutes=1),
        t + timedelta(minutes=4),
    )
    assert (ended.prompt_tokens, ended.completion_tokens) == (3000, 1500)
    # $0.075 spent on the fallback; the same tokens on the primary: 3,000 x $1 + 1,500 x $2 per 1M.
    assert ended.cost == Decimal("0.075")
    assert ended.primary_cost == Decimal("0.006")
    assert ended.extra == Decimal("0.069")
    assert ongoing.ongoing and ongoing.started_at == t + timedelta(minutes=10)
    assert ongoing.extra == Decimal("0.004") - Decimal("0.0003")
    assert report.extra == Decimal("0.0727")
    # Another balancer's filter sees nothing.
    assert (
        failover_incidents(
            start=t - timedelta(hours=1), end=timezone.now(), condition=Q(balancer_id=-1)
        ).count
        == 0
    )


def test_the_usage_page_api_csv_and_board_show_the_extra_spend(admin_client, incident) -> None:
    balancer, _ = incident
    data = admin_client.get("/api/usage/").json()
    incidents = data["failover_incidents"]
    assert [
        (i["primary_route"], i["requests"], Decimal(i["extra_cost_usd"])) for i in incidents
    ] == [
        ("primary", 1, Decimal("0.0037")),
        ("primary", 2, Decimal("0.069")),
    ]
    assert incidents[0]["ended_at"] is None and incidents[1]["ended_at"] is not None

    html = admin_client.get("/usage/").content.decode()
    assert 'data-testid="usage-failover"' in html
    assert '<span class="value" data-testid="failover-extra">$0.0727</span>' in html
    assert "<b>$0.0690</b>" in html and "<b>$0.003700</b>" in html

    rows = list(
        csv.DictReader(
            io.StringIO(admin_client.get("/usage/export.csv?table=failover").content.decode())
        )
    )
    assert [(r["requests"], r["extra_cost_usd"], r["ended_at"] == "") for r in rows] == [
        ("1", "0.0037000000", True),
        ("2", "0.0690000000", False),
    ]

    board = admin_client.get(f"/balancers/{balancer.name}/board/").content.decode()
    # The same amount, rounded the same way, as on the usage page (one money rule).
    assert 'data-testid="failover-extra">$0.0727</div>' in board
    assert board.count('data-testid="board-incident"') == 2
    # Pushed with the lanes (and answered to the board's fallback poll): live while it happens.
    lanes = admin_client.get(f"/balancers/{balancer.name}/board/?lanes=1").json()
    assert 'data-testid="failover-extra">$0.0727</div>' in lanes["summary"]


@pytest.mark.django_db(transaction=True)
def test_the_gateway_records_the_route_a_failed_over_request_was_meant_for(setup) -> None:
    from tests.gateway.test_openai_sdk import wait_for_events

    primary = setup.instance("fo-cost-p", Behaviour(status=500))
    fallback = setup.instance("fo-cost-f", Behaviour(content="from fallback"))
    balancer = setup.failover_balancer(primary, fallback, serving_name="fo-meant")
    client = setup.client()
    client.chat.completions.create(model="fo-meant", messages=[{"role": "user", "content": "hi"}])
    [event] = wait_for_events(1, balancer=balancer)
    assert (event.decided_route, event.route) == ("primary", "fallback")
