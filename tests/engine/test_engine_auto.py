from __future__ import annotations

import dataclasses

import pytest
from engine_factories import (
    make_balancer,
    make_group,
    make_instance,
    make_member,
    make_route,
    make_routing,
    trip,
)

from gateway.engine.auto import rank_instances
from gateway.engine.health import HealthTracker
from gateway.engine.planner import plan_attempts
from gateway.engine.selection import LoadStats

NOW = 1000.0


def fleet():
    """Three deployments with a clear profile each, behind three routes."""
    premium = make_instance("premium", quality_tier=5, input_price=10.0, output_price=30.0)
    fast = make_instance("fast", quality_tier=3, input_price=0.5, output_price=1.5)
    cheap = make_instance("cheap", quality_tier=2, input_price=0.05, output_price=0.1)
    load = LoadStats()
    load.observe(premium.pk, 3.0)
    load.observe(fast.pk, 0.3)
    load.observe(cheap.pk, 1.5)
    return premium, fast, cheap, load


def ranking(balancer, preference=None, health=None, load=None):
    ranked = rank_instances(
        balancer,
        health=health or HealthTracker(),
        load=load or LoadStats(),
        now=NOW,
        preference=preference,
    )
    return [r.instance.instance_id for r in ranked]


def auto_balancer(*instances, preference: str = "balanced", budget: int = 3):
    routes = [
        make_route(f"r{i}", instance, priority=i, is_default=i == 0)
        for i, instance in enumerate(instances)
    ]
    return make_balancer(*routes, mode="auto", preference=preference, budget=budget)


def test_quality_preference_puts_the_highest_tier_first() -> None:
    premium, fast, cheap, load = fleet()
    balancer = auto_balancer(cheap, fast, premium)
    assert ranking(balancer, "quality", load=load) == ["premium", "fast", "cheap"]


def test_speed_preference_puts_the_lowest_latency_first() -> None:
    premium, fast, cheap, load = fleet()
    balancer = auto_balancer(premium, cheap, fast)
    assert ranking(balancer, "speed", load=load) == ["fast", "cheap", "premium"]


def test_cost_preference_puts_the_cheapest_first() -> None:
    premium, fast, cheap, load = fleet()
    balancer = auto_balancer(premium, fast, cheap)
    assert ranking(balancer, "cost", load=load) == ["cheap", "fast", "premium"]


def test_balanced_preference_trades_quality_against_speed_and_price() -> None:
    premium, fast, cheap, load = fleet()
    balancer = auto_balancer(premium, cheap, fast)
    # fast: decent quality, fastest, cheap enough; premium: best but slow and 200x the price.
    assert ranking(balancer, "balanced", load=load)[0] == "fast"


def test_the_balancer_preference_applies_when_none_is_given() -> None:
    premium, fast, cheap, load = fleet()
    balancer = auto_balancer(cheap, fast, premium, preference="quality")
    assert ranking(balancer, load=load)[0] == "premium"


def test_an_unknown_preference_ranks_as_balanced() -> None:
    premium, fast, cheap, load = fleet()
    balancer = auto_balancer(premium, cheap, fast)
    assert ranking(balancer, "vibes", load=load) == ranking(balancer, "balanced", load=load)


def test_unmeasured_instances_rank_with_the_fastest_so_they_get_measured() -> None:
    slow, new, fast = make_instance("slow"), make_instance("new"), make_instance("fast")
    load = LoadStats()
    load.observe(slow.pk, 2.0)
    load.observe(fast.pk, 0.5)
    assert ranking(auto_balancer(slow, new, fast), "speed", load=load) == ["new", "fast", "slow"]


def test_a_flaky_instance_sinks() -> None:
    steady, flaky = make_instance("steady"), make_instance("flaky")
    health = HealthTracker()
    for _ in range(4):
        health.record_success(flaky.pk, NOW)
        health.record_success(flaky.pk, NOW)
        health.record_failure(flaky.pk, NOW)
    assert health.is_eligible(flaky.pk, NOW)
    assert ranking(auto_balancer(flaky, steady), health=health) == ["steady", "flaky"]


def test_a_busy_instance_sinks_when_otherwise_equal() -> None:
    busy, idle = make_instance("busy"), make_instance("idle")
    load = LoadStats()
    load.begin(busy.pk)
    load.begin(busy.pk)
    assert ranking(auto_balancer(busy, idle), load=load) == ["idle", "busy"]


def test_equal_scores_keep_route_order() -> None:
    first, second = make_instance("first"), make_instance("second")
    assert ranking(auto_balancer(first, second)) == ["first", "second"]


def test_ranking_leaves_out_cooling_drained_and_disabled_and_counts_each_instance_once() -> None:
    ok, cooling, drained, off = (make_instance(n) for n in ("ok", "cooling", "drained", "off"))
    parked = make_instance("parked")
    health = HealthTracker()
    trip(health, cooling, NOW)
    balancer = make_balancer(
        make_route(
            "main",
            make_group(
                ok, cooling, make_member(drained, weight=0), make_member(off, enabled=False)
            ),
            is_default=True,
        ),
        make_route("again", make_group(ok), priority=2),
        make_route("parked", parked, priority=3, enabled=False),
        mode="auto",
    )
    ranked = rank_instances(balancer, health=health, load=LoadStats(), now=NOW)
    assert [(r.route.name, r.instance.instance_id) for r in ranked] == [("main", "ok")]


def test_ranked_instances_explain_their_score() -> None:
    premium, _, _, load = fleet()
    (rung,) = rank_instances(auto_balancer(premium), health=None, load=load, now=NOW)
    assert (rung.quality, rung.speed, rung.cost, rung.load, rung.availability) == (
        1.0,
        1.0,
        1.0,
        1.0,
        1.0,
    )
    assert rung.score == pytest.approx(1.0)


def test_auto_plan_fails_over_down_the_ranking_within_the_budget() -> None:
    premium, fast, cheap, load = fleet()
    balancer = auto_balancer(premium, fast, cheap, preference="cost", budget=2)
    routing = make_routing()
    routing.load = load
    plan = plan_attempts(balancer, routing)
    assert plan.reason == "auto:cost"
    tried = []
    while (attempt := plan.next()) is not None:
        assert attempt.ranked is not None
        tried.append(attempt.instance.instance_id)
        plan.failed()
    assert tried == ["cheap", "fast"]


def test_auto_plan_skips_an_instance_that_cooled_after_ranking() -> None:
    premium, fast, cheap, load = fleet()
    balancer = auto_balancer(premium, fast, cheap, preference="cost")
    routing = make_routing()
    routing.load = load
    plan = plan_attempts(balancer, routing)
    trip(routing.health, cheap, routing.clock())  # another request tripped it meanwhile
    attempt = plan.next()
    assert attempt is not None and attempt.instance is fast


def test_auto_plan_tries_the_least_recently_failed_when_everything_cools() -> None:
    a, b = make_instance("a"), make_instance("b")
    balancer = auto_balancer(a, b)
    routing = make_routing()
    trip(routing.health, b, routing.clock() - 2)
    trip(routing.health, a, routing.clock() - 1)
    plan = plan_attempts(balancer, routing)
    attempt = plan.next()
    assert attempt is not None
    assert (attempt.instance, attempt.last_resort) == (b, True)
    plan.failed()
    assert plan.next() is None


def test_auto_plan_honours_an_explicit_route() -> None:
    premium, fast, cheap, _ = fleet()
    balancer = auto_balancer(premium, fast, cheap, preference="cost")
    plan = plan_attempts(
        balancer, make_routing(), first=balancer.route_named("r0"), reason="override"
    )
    attempt = plan.next()
    assert attempt is not None and attempt.instance is premium


def test_reserved_capacity_costs_nothing_at_the_margin_until_it_is_saturated() -> None:
    """Its hour is paid whatever it serves: auto's cost term reads its marginal price, 0 while it
    has room (as capacity-first does), its per-token prices once its concurrency is full."""
    dedicated = dataclasses.replace(
        make_instance("dedicated", input_price=10.0, output_price=30.0),
        pricing="capacity",
        capacity=2,
        capacity_unit="concurrent_requests",
    )
    cheap = make_instance("cheap", input_price=0.05, output_price=0.1)
    balancer = auto_balancer(cheap, dedicated, preference="cost")
    load = LoadStats()
    [top] = rank_instances(balancer, health=HealthTracker(), load=load, now=NOW)[:1]
    assert top.instance.instance_id == "dedicated" and top.cost == 1.0
    load.begin(dedicated.pk)
    assert ranking(balancer, load=load)[0] == "dedicated"  # 1 of 2 slots: room left
    load.begin(dedicated.pk)
    assert ranking(balancer, load=load) == ["cheap", "dedicated"]  # saturated: $40 per 1M


def test_an_operators_exclusion_is_never_ranked_nor_tried_as_the_last_resort() -> None:
    premium, fast, cheap, load = fleet()
    balancer = dataclasses.replace(
        auto_balancer(premium, fast, cheap, preference="cost"),
        auto_exclusions=frozenset({cheap.model, "premium"}),  # a model name and an instance id
    )
    assert ranking(balancer, load=load) == ["fast"]
    routing = make_routing()
    routing.load = load
    trip(routing.health, fast, routing.clock())  # everything left cools down
    plan = plan_attempts(balancer, routing)
    tried = []
    while (attempt := plan.next()) is not None:
        tried.append(attempt.instance.instance_id)
        plan.failed()
    assert tried == ["fast"]  # the last resort comes from the pool without the exclusions


def test_request_demand_is_the_largest_of_size_tools_and_images() -> None:
    from gateway.engine.auto import request_demand

    assert request_demand(prompt_tokens=0, tools=False, images=False) == 0.0
    assert request_demand(prompt_tokens=4000, tools=False, images=False) == 0.5
    assert request_demand(prompt_tokens=20_000, tools=False, images=False) == 1.0
    assert request_demand(prompt_tokens=100, tools=True, images=True) == 0.75
    assert request_demand(prompt_tokens=100, tools=False, images=True) == 0.5


@pytest.mark.parametrize(
    ("demand", "first"),
    [(None, "light"), (0.0, "light"), (0.75, "strong"), (1.0, "strong")],
)
def test_a_demanding_request_moves_balanced_toward_the_stronger_tier(demand, first) -> None:
    from gateway.engine.auto import AutoRequest, rank_auto

    light = make_instance("light", quality_tier=2, input_price=0.25, output_price=0.25)
    strong = make_instance("strong", quality_tier=4, input_price=1.0, output_price=1.0)
    balancer = auto_balancer(light, strong)
    ranked = rank_auto(
        balancer,
        AutoRequest(preference="balanced", demand=demand),
        health=HealthTracker(),
        load=LoadStats(),
        now=NOW,
    ).ranked
    assert ranked[0].instance.instance_id == first
    by_id = {r.instance.instance_id: r.terms() for r in ranked}
    # r = D * q, weight 0.20: light q = 0.25, strong q = 0.75.
    assert by_id["light"]["demand"] == pytest.approx(0.20 * (demand or 0) * 0.25)
    assert by_id["strong"]["demand"] == pytest.approx(0.20 * (demand or 0) * 0.75)
