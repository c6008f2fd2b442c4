"""Request-side auto: the code preference, pools, fallback lists, auto-free, terms and skip
reasons."""

from __future__ import annotations

from dataclasses import replace

import pytest
from engine_factories import (
    make_balancer,
    make_group,
    make_instance,
    make_route,
    make_routing,
    trip,
)

from gateway.engine.auto import (
    PREFERENCE_WEIGHTS,
    SKIP_COOLING,
    SKIP_LIST,
    SKIP_POOL,
    SKIP_PRICED,
    AutoRequest,
    rank_auto,
)
from gateway.engine.health import HealthTracker
from gateway.engine.planner import plan_attempts
from gateway.engine.selection import LoadStats
from targetgroups.catalogue import strengths_for

NOW = 1000.0


def pool_balancer(*instances):
    return make_balancer(make_route("auto", make_group(*instances)), mode="auto", budget=5)


def rank(balancer, request, health=None, load=None):
    return rank_auto(
        balancer, request, health=health or HealthTracker(), load=load or LoadStats(), now=NOW
    )


def test_code_preference_puts_any_coder_above_the_best_non_coder_then_ranks_coders_by_quality():
    best_general = make_instance("general", quality_tier=5)
    weak_coder = replace(make_instance("weak-coder", quality_tier=1), strengths=("code",))
    strong_coder = replace(
        make_instance("strong-coder", quality_tier=4), strengths=("code", "reasoning")
    )
    ranking = rank(
        pool_balancer(best_general, weak_coder, strong_coder), AutoRequest(preference="code")
    )
    assert [r.instance.instance_id for r in ranking.ranked] == [
        "strong-coder",
        "weak-coder",
        "general",
    ]
    assert ranking.ranked[0].strength == 1.0 and ranking.ranked[2].strength == 0.0


def test_score_is_the_sum_of_its_terms_times_availability():
    a, b = make_instance("a", quality_tier=4), make_instance("b", input_price=0.0, output_price=0.0)
    load = LoadStats()
    load.observe(a.pk, 0.2)
    load.observe(b.pk, 0.8)
    for preference in PREFERENCE_WEIGHTS:
        for rung in rank(pool_balancer(a, b), AutoRequest(preference=preference), load=load).ranked:
            terms = rung.terms()
            availability = terms.pop("availability")
            assert rung.score == pytest.approx(availability * sum(terms.values()))


def test_a_pool_narrows_the_candidates_and_names_the_others_as_skipped():
    a, b, c = make_instance("a"), make_instance("b"), make_instance("c")
    ranking = rank(pool_balancer(a, b, c), AutoRequest(pool=frozenset({a.pk, c.pk})))
    assert {r.instance.instance_id for r in ranking.ranked} == {"a", "c"}
    assert [(s.instance.instance_id, s.reason) for s in ranking.skipped] == [("b", SKIP_POOL)]


def test_the_key_limit_removes_instances_without_naming_them():
    a, b = make_instance("a"), make_instance("b")
    ranking = rank(pool_balancer(a, b), AutoRequest(allowed=frozenset({b.pk})))
    assert [r.instance.instance_id for r in ranking.ranked] == ["b"]
    assert ranking.skipped == [] and ranking.pool == frozenset({b.pk})


def test_a_models_list_orders_by_the_list_whatever_the_scores():
    cheap = make_instance("cheap", input_price=0.0, output_price=0.0)
    dear = make_instance("dear", input_price=50.0, output_price=50.0)
    other = make_instance("other")
    ranking = rank(
        pool_balancer(cheap, dear, other),
        AutoRequest(preference="cost", order=(frozenset({dear.pk}), frozenset({cheap.pk}))),
    )
    assert [r.instance.instance_id for r in ranking.ranked] == ["dear", "cheap"]
    assert [(s.instance.instance_id, s.reason) for s in ranking.skipped] == [("other", SKIP_LIST)]


def test_auto_free_keeps_only_zero_priced_instances():
    free = make_instance("free", input_price=0.0, output_price=0.0)
    priced = make_instance("priced", input_price=0.0, output_price=0.01)
    ranking = rank(pool_balancer(free, priced), AutoRequest(free_only=True))
    assert [r.instance.instance_id for r in ranking.ranked] == ["free"]
    assert [(s.instance.instance_id, s.reason) for s in ranking.skipped] == [
        ("priced", SKIP_PRICED)
    ]
    only_priced = rank(pool_balancer(priced), AutoRequest(free_only=True))
    assert only_priced.ranked == [] and only_priced.pool == frozenset()


def test_a_cooling_down_instance_is_skipped_but_stays_in_the_pool():
    a, b = make_instance("a"), make_instance("b")
    health = HealthTracker()
    trip(health, a, NOW)
    ranking = rank(pool_balancer(a, b), AutoRequest(), health=health)
    assert [r.instance.instance_id for r in ranking.ranked] == ["b"]
    assert [(s.instance.instance_id, s.reason) for s in ranking.skipped] == [("a", SKIP_COOLING)]
    assert ranking.pool == frozenset({a.pk, b.pk})


def test_the_last_resort_stays_inside_the_requested_pool():
    inside, outside = make_instance("inside"), make_instance("outside")
    routing = make_routing()
    trip(routing.health, inside, routing.clock())
    plan = plan_attempts(
        pool_balancer(outside, inside), routing, auto=AutoRequest(pool=frozenset({inside.pk}))
    )
    first = plan.next()
    assert first is not None and first.instance.instance_id == "inside" and first.last_resort
    assert plan.next() is None


def test_a_plan_reports_the_requested_preference_and_fails_over_down_the_ranking():
    tiers = [make_instance(f"tier{n}", quality_tier=n) for n in (2, 5, 3)]
    plan = plan_attempts(
        pool_balancer(*tiers), make_routing(), auto=AutoRequest(preference="quality")
    )
    assert plan.reason == "auto:quality"
    order = []
    while (attempt := plan.next()) is not None:
        order.append(attempt.instance.instance_id)
        plan.failed()
    assert order == ["tier5", "tier3", "tier2"]


@pytest.mark.parametrize(
    ("model", "strong_in_code"),
    [
        ("gpt-4o", True),
        ("gpt-4o-mini", False),
        ("openai/gpt-4o-2024-08-06", True),
        ("qwen2.5-coder-7b-instruct", True),
        ("llama3.2", False),
        ("claude-sonnet-4-5", True),
    ],
)
def test_the_curated_catalogue_gives_strengths_by_the_longest_prefix(
    model: str, strong_in_code: bool
):
    assert ("code" in strengths_for(model)) is strong_in_code
