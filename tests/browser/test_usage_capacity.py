"""An operator reads reserved capacity (utilisation, effective price) and failover cost on the usage
page."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from balancers.models import Balancer
from gateway.models import UsageEvent
from gateway.reporting.rollups import floor_hour
from targetgroups.models import Instance, TargetGroup, TargetGroupMember
from tests.factories import make_instance

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect


def seeded() -> None:
    """Six paid hours of a dedicated deployment in the efficient pool, and a failover to
    reasoning."""
    support = Balancer.objects.get(name="support-balancer")
    now = timezone.now()
    dedicated = make_instance(
        instance_id="llama-dedicated",
        display_name="llama-70b (dedicated)",
        model="llama-70b",
        pricing="capacity",
        capacity_price_per_hour="4.00",
        capacity=100,
        capacity_unit="tokens_per_second",
    )
    Instance.objects.filter(pk=dedicated.pk).update(
        capacity_since=floor_hour(now) - timedelta(hours=6)
    )
    pool = TargetGroup.objects.get(name="efficient-pool")
    pool.selection_policy = "capacity_first"
    pool.save()
    TargetGroupMember.objects.create(group=pool, instance=dedicated, priority=1)
    prices = {i.instance_id: i for i in Instance.objects.all()}
    events = []

    def add(
        at: Any, route: str, instance: str, prompt: int, completion: int, **fields: Any
    ) -> None:
        inst = prices[instance]
        cost = (
            Decimal(0)
            if inst.capacity_priced
            else (
                prompt * inst.input_price_per_million + completion * inst.output_price_per_million
            )
            / 1_000_000
        )
        events.append(
            UsageEvent(
                created_at=at,
                request_id=f"cap-{len(events)}",
                endpoint="chat",
                balancer=support,
                serving_name=support.serving_name,
                decided_route=fields.pop("decided", route),
                route=route,
                instance=instance,
                model=inst.model,
                status_code=200,
                latency_ms=fields.pop("latency", 2400.0),
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_usd=cost,
                decision_reason="classified",
                **{"attempts": 1, **fields},
            )
        )

    # The efficient pool went away for 20 minutes three hours ago: its requests failed over
    # to reasoning (and none was answered by the pool meanwhile).
    outage = floor_hour(now) - timedelta(hours=3) + timedelta(minutes=15)
    # Busier in the later hours: 4 to 14 requests an hour on the dedicated deployment, and
    # the spill-over to the token-billed qwen members in the two busiest hours.
    for hours_ago in range(1, 7):
        start = floor_hour(now) - timedelta(hours=hours_ago)
        busy = 4 + 2 * (6 - hours_ago)
        for n in range(busy):
            at = start + timedelta(minutes=4 * n + 1)
            if not outage <= at < outage + timedelta(minutes=20):
                add(at, "efficient", "llama-dedicated", 18_000, 7_000)
        if hours_ago <= 2:
            for n in range(3):
                add(
                    start + timedelta(minutes=10 * n + 3),
                    "efficient",
                    "qwen-cheap-a",
                    18_000,
                    7_000,
                    spilled=True,
                )
    for n in range(8):
        add(
            outage + timedelta(minutes=2 * n),
            "reasoning",
            "gpt-oss-120b",
            18_000,
            7_000,
            decided="efficient",
            attempts=2,
        )
    add(outage + timedelta(minutes=20), "efficient", "llama-dedicated", 18_000, 7_000)
    UsageEvent.objects.bulk_create(events)


def test_an_operator_reads_capacity_utilisation_and_failover_cost(ui) -> None:
    seeded()
    page = ui.page
    ui.login()
    ui.go("/usage/")
    capacity = page.get_by_test_id("usage-capacity")
    expect(capacity).to_be_visible()
    row = capacity.get_by_test_id("capacity-llama-dedicated")
    expect(row.get_by_test_id("capacity-cost")).to_have_text("$24.00")  # six hours at $4.00
    # 50 requests of 25,000 tokens in six hours of 100 tokens/s: 1.25M of 2.16M tokens.
    expect(row.get_by_test_id("capacity-utilisation")).to_have_text("57.9%")
    expect(row.get_by_test_id("capacity-effective")).to_have_text("$19.20")
    failover = page.get_by_test_id("usage-failover")
    expect(failover.locator("tbody tr")).to_have_count(1)
    expect(failover).to_contain_text("reasoning")
    # 8 requests of 18,000 + 7,000 tokens on gpt-oss-120b ($0.60/$2.40) instead of the pool's
    # priciest per-token member, qwen-cheap ($0.10/$0.30): $0.2208 - $0.0312.
    expect(failover.get_by_test_id("failover-extra")).to_have_text("$0.1896")
    # The two sections, one picture.
    top = capacity.bounding_box()
    bottom = failover.bounding_box()
    assert top is not None and bottom is not None
    page.screenshot(
        path=str(ui_shots() / "usage-capacity.png"),
        full_page=True,
        clip={
            "x": 0,
            "y": top["y"] - 16,
            "width": page.viewport_size["width"],
            "height": bottom["y"] + bottom["height"] - top["y"] + 32,
        },
        animations="disabled",
        caret="hide",
        timeout=45_000,
    )


def ui_shots() -> Any:
    from tests.browser.conftest import SCREENSHOTS

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
