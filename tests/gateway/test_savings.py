"""Savings on a controlled history: the cache's, and against the priciest and the baseline routes,
from the rollups (gateway.reporting.savings), on /api/usage/ and the usage page."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from gateway.models import UsageEvent
from gateway.reporting.rollups import rollup_usage
from gateway.reporting.selectors import UsageFilters, savings_report
from tests.factories import make_balancer, make_group, make_instance

pytestmark = pytest.mark.django_db

M = 1_000_000


def event(
    balancer: Any,
    *,
    route: str,
    prompt: int,
    completion: int,
    cost: str,
    hit: bool = False,
    saved: str = "0",
    serving_name: str | None = None,
) -> None:
    UsageEvent.objects.create(
        created_at=timezone.now() - timedelta(minutes=5),
        request_id="r",
        endpoint="chat",
        balancer=balancer,
        serving_name=serving_name or balancer.serving_name,
        route=route,
        instance="x",
        model="m",
        status_code=200,
        latency_ms=10.0,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=Decimal(cost),
        cache_hit=hit,
        savings_usd=Decimal(saved),
    )


@pytest.fixture
def history() -> dict[str, Any]:
    """Prices per 1M tokens (input/output): cheap 1/2, mid 3/6, expensive 10/30, gold 100/100 (its
    route is off).

    support: 1M+0.5M tokens on efficient (cheap, $2.00), 0.2M+0.1M on reasoning (mid, $1.20), and a
    cache hit of 1M+0.5M that saved $2.00; 2.2M prompt and 1.1M completion tokens for $3.20 in all.
    other: 1M prompt tokens on its only route (cheap, $1.00), no baseline named. A deleted
    balancer's cache hit saved $0.50.
    """
    cheap = make_instance(input_price_per_million="1", output_price_per_million="2")
    mid = make_instance(input_price_per_million="3", output_price_per_million="6")
    expensive = make_instance(input_price_per_million="10", output_price_per_million="30")
    gold = make_instance(input_price_per_million="100", output_price_per_million="100")
    support = make_balancer(
        name="support",
        baseline_route="fallback",
        routes=[
            {
                "name": "efficient",
                "intent": "Easy.",
                "instance": cheap,
                "priority": 1,
                "is_default": True,
            },
            {
                "name": "reasoning",
                "intent": "Hard.",
                "target_group": make_group(instances=[mid, expensive]),
                "priority": 2,
            },
            {"name": "fallback", "intent": "Else.", "instance": mid, "priority": 3},
            {"name": "gold", "intent": "Off.", "instance": gold, "priority": 4, "enabled": False},
        ],
    )
    other = make_balancer(
        name="other",
        routes=[
            {"name": "only", "intent": "All.", "instance": cheap, "priority": 1, "is_default": True}
        ],
    )
    event(support, route="efficient", prompt=M, completion=M // 2, cost="2.00")
    event(support, route="reasoning", prompt=M // 5, completion=M // 10, cost="1.20")
    event(support, route="efficient", prompt=M, completion=M // 2, cost="0", hit=True, saved="2.00")
    event(other, route="only", prompt=M, completion=0, cost="1.00")
    event(
        None,
        route="main",
        prompt=10,
        completion=10,
        cost="0",
        hit=True,
        saved="0.50",
        serving_name="gone",
    )
    rollup_usage()
    return {"support": support, "other": other}


def test_savings_are_priced_on_the_priciest_enabled_route_and_the_named_baseline(history) -> None:
    start, end = UsageFilters().range.window(timezone.now())
    report = savings_report(filters=UsageFilters(), start=start, end=end)
    support, other, gone = report.balancers
    assert (support.balancer, support.cost, support.cache_hits, support.cache_savings) == (
        "support",
        Decimal("3.20"),
        1,
        Decimal("2.00"),
    )
    # reasoning, on its priciest member (expensive): 2.2 x $10 + 1.1 x $30; the disabled gold route
    # is not counted.
    assert (support.priciest_route, support.priciest_cost) == ("reasoning", Decimal("55"))
    assert support.savings_vs_priciest == Decimal("51.80")
    # fallback (mid): 2.2 x $3 + 1.1 x $6.
    assert (support.baseline_route, support.baseline_cost, support.savings_vs_baseline) == (
        "fallback",
        Decimal("13.2"),
        Decimal("10.00"),
    )
    assert (other.priciest_route, other.savings_vs_priciest, other.baseline_cost) == (
        "only",
        Decimal("0"),
        None,
    )
    assert (gone.balancer, gone.serving_name, gone.priciest_cost, gone.cache_savings) == (
        "",
        "gone",
        None,
        Decimal("0.50"),
    )
    assert (report.cache_hits, report.cache_savings) == (2, Decimal("2.50"))
    assert (report.priciest_cost, report.savings_vs_priciest) == (Decimal("56"), Decimal("51.80"))
    assert (report.baseline_cost, report.savings_vs_baseline) == (Decimal("13.2"), Decimal("10.00"))
    narrowed = savings_report(filters=UsageFilters(balancer=history["other"]), start=start, end=end)
    assert [b.balancer for b in narrowed.balancers] == [
        "other"
    ] and narrowed.savings_vs_baseline is None


def test_a_reserved_route_is_priced_at_its_effective_price_over_the_range_not_per_token() -> None:
    """A reserved instance's $4 hour served 1M + 1M tokens: $2 per 1M tokens, the usage page's
    effective price. Its per-token prices (100/100 here) are not read: pricing the balancer's
    3.5M tokens on it would say $350; on its allocation it is $7."""
    from gateway.models import CapacityHour
    from gateway.reporting.capacity import floor_hour

    dedicated = make_instance(
        input_price_per_million="100",
        output_price_per_million="100",
        pricing="capacity",
        capacity_price_per_hour="4",
        capacity=2,
    )
    cheap = make_instance(input_price_per_million="1", output_price_per_million="2")
    balancer = make_balancer(
        name="reserved-first",
        baseline_route="dedicated",
        routes=[
            {"name": "dedicated", "intent": "All.", "instance": dedicated, "priority": 1},
            {
                "name": "api",
                "intent": "Else.",
                "instance": cheap,
                "priority": 2,
                "is_default": True,
            },
        ],
    )
    event(balancer, route="dedicated", prompt=M, completion=M, cost="4.00")
    event(balancer, route="api", prompt=M, completion=M // 2, cost="2.00")
    rollup_usage()
    hour = floor_hour(timezone.now()) - timedelta(hours=2)
    CapacityHour.objects.update_or_create(
        instance=dedicated.instance_id,
        hour=hour,
        defaults={
            "price_usd": Decimal("4"),
            "unit": "concurrent_requests",
            "capacity": 2,
            "requests": 1,
            "prompt_tokens": M,
            "completion_tokens": M,
            "spread_usd": Decimal("4"),
        },
    )
    start, end = UsageFilters().range.window(timezone.now())
    [row] = savings_report(filters=UsageFilters(balancer=balancer), start=start, end=end).balancers
    # 3.5M tokens x $2 per 1M on dedicated; api: 2M x $1 + 1.5M x $2 = $5.
    assert (row.priciest_route, row.priciest_cost) == ("dedicated", Decimal("7"))
    assert (row.baseline_route, row.baseline_cost) == ("dedicated", Decimal("7"))
    assert row.cost == Decimal("6.00") and row.savings_vs_baseline == Decimal("1.00")


def test_the_usage_api_and_page_show_the_savings(history, admin_client) -> None:
    savings = admin_client.get("/api/usage/").json()["savings"]
    assert (savings["cache_hits"], savings["cache_savings_usd"]) == (2, "2.5000000000")
    assert savings["savings_vs_priciest_route_usd"] == "51.8000000000"
    assert savings["savings_vs_baseline_route_usd"] == "10.0000000000"
    support = savings["balancers"][0]
    assert (support["balancer"], support["priciest_route"], support["baseline_route"]) == (
        "support",
        "reasoning",
        "fallback",
    )
    assert support["baseline_route_cost_usd"] == "13.2000000000"

    html = admin_client.get("/usage/").content.decode()
    assert 'data-testid="usage-savings"' in html
    for figure in ("$2.50", "$51.80", "$10.00", "$13.20", "$56.00"):
        assert figure in html, figure


def test_a_baseline_route_must_be_one_of_the_balancers_routes() -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as refused:
        make_balancer(baseline_route="nowhere")
    assert "baseline_route" in refused.value.message_dict
