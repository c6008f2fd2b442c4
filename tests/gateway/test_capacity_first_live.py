"""Capacity first through the running gateway: a slow reserved simulator fills, then traffic spills
over."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from targetgroups.models import TargetGroupMember
from tests.factories import make_balancer, make_group, make_instance
from tests.gateway.test_openai_sdk import wait_for_events

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "hello there"}]


def test_capacity_first_fills_the_reserved_instance_then_spills_over(setup, admin_client):
    dedicated = make_instance(
        instance_id="dedicated",
        provider="simulator",
        model="sim-dedicated",
        options={"latency_ms": 1500},
        pricing="capacity",
        capacity_price_per_hour="3.00",
        capacity=2,
        capacity_unit="concurrent_requests",
    )
    metered = make_instance(
        instance_id="metered",
        provider="simulator",
        model="sim-metered",
        options={"latency_ms": 50},
        input_price_per_million="2",
        output_price_per_million="8",
    )
    group = make_group(instances=[], selection_policy="capacity_first")
    # The token-billed member is in the better tier: capacity first still fills the reserved one.
    TargetGroupMember.objects.create(group=group, instance=metered, priority=1)
    TargetGroupMember.objects.create(group=group, instance=dedicated, priority=2)
    balancer = make_balancer(
        serving_name="capfirst",
        routes=[
            {
                "name": "pool",
                "intent": "All.",
                "target_group": group,
                "priority": 1,
                "is_default": True,
            }
        ],
    )
    client = setup.client()

    def ask(_: int) -> str:
        raw = client.chat.completions.with_raw_response.create(model="capfirst", messages=HELLO)
        return raw.headers["x-balancer-instance"]

    # Five at once: two fill the reserved instance's two slots (it takes 1.5 s), three spill over.
    with ThreadPoolExecutor(5) as pool:
        served = sorted(pool.map(ask, range(5)))
    assert served == ["dedicated", "dedicated", "metered", "metered", "metered"]

    # With its slots free again, the next request goes back to the reserved instance.
    assert ask(0) == "dedicated"

    events = wait_for_events(6, balancer=balancer)
    spilled = [e for e in events if e.spilled]
    assert sorted(e.instance for e in spilled) == ["metered"] * 3
    assert not any(e.spilled for e in events if e.instance == "dedicated")
    # Reserved capacity records no cost per request (its hour is spread when it closes);
    # the spill-over is billed per token.
    assert all(e.cost_usd == 0 for e in events if e.instance == "dedicated")
    for e in spilled:
        assert e.cost_usd == (
            Decimal(e.prompt_tokens) * 2 + Decimal(e.completion_tokens) * 8
        ) / Decimal(1_000_000)
        assert e.cost_usd > 0 and e.decided_route == "pool" and e.route == "pool"

    # The board shows the spill-over on the lane.
    html = admin_client.get(f"/balancers/{balancer.name}/board/").content.decode()
    assert '<dd data-testid="spilled">3</dd>' in html
    assert ">reserved</span>" in html
