"""Capability-aware routing in the engine: each rule skips a target in every mode, the
context-length failover drops the windows that are not larger, and the prompt's difficulty moves
auto's pick."""

from __future__ import annotations

from dataclasses import replace

import pytest
from engine_factories import make_balancer, make_group, make_instance, make_route, make_routing

from gateway.engine.auto import AutoRequest, rank_auto
from gateway.engine.capability import (
    SKIP_JSON,
    SKIP_STREAMING,
    SKIP_TOOLS,
    SKIP_VISION,
    Needs,
    needs_of,
    unfit_reason,
)
from gateway.engine.health import HealthTracker
from gateway.engine.planner import plan_attempts
from gateway.engine.selection import LoadStats

IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def ask(content="Hello", **fields):
    return {"model": "m", "messages": [{"role": "user", "content": content}], **fields}


# (request body, the instance field that makes a target unable to serve it, the reason's start)
RULES = [
    (ask(tools=[TOOL]), {"supports_tools": False}, SKIP_TOOLS),
    (
        ask([{"type": "text", "text": "What is it?"}, IMAGE]),
        {"supports_vision": False},
        SKIP_VISION,
    ),
    (ask(response_format={"type": "json_object"}), {"supports_json_mode": False}, SKIP_JSON),
    (ask(response_format={"type": "json_schema"}), {"supports_json_mode": False}, SKIP_JSON),
    (ask(stream=True), {"supports_streaming": False}, SKIP_STREAMING),
    (ask("word " * 300), {"context_window": 100}, "context window 100 tokens < prompt ~"),
    (ask(max_tokens=2000), {"context_window": 1000}, "context window 1000 tokens < prompt ~"),
    (ask(max_completion_tokens=5000), {"max_output_tokens": 4096}, "max output 4096 tokens"),
]


@pytest.mark.parametrize(("body", "lacking", "reason"), RULES)
def test_each_rule_names_the_reason_and_an_able_or_unknown_target_passes(body, lacking, reason):
    needs = needs_of(body)
    unable = replace(make_instance("unable"), **lacking)
    assert (unfit_reason(unable, needs) or "").startswith(reason)
    able = {key: (True if isinstance(value, bool) else 1_000_000) for key, value in lacking.items()}
    assert unfit_reason(replace(make_instance("able"), **able), needs) is None
    assert unfit_reason(make_instance("unknown"), needs) is None  # unknown never refuses


def test_a_plain_request_needs_nothing_and_passes_a_target_that_lacks_everything():
    bare = replace(
        make_instance("bare"),
        supports_tools=False,
        supports_vision=False,
        supports_json_mode=False,
        supports_streaming=False,
        context_window=50,
    )
    needs = needs_of(ask())
    assert not (needs.tools or needs.vision or needs.json_mode or needs.streaming)
    assert needs.max_tokens is None and needs.prompt_tokens <= needs.upper
    assert unfit_reason(bare, needs) is None


def test_the_length_bound_spares_the_estimate_until_a_window_is_close():
    counted = []
    needs = Needs(upper=500, count=lambda: counted.append(1) or 450)
    roomy = replace(make_instance("roomy"), context_window=8192)
    assert unfit_reason(roomy, needs) is None and counted == []
    tight = replace(make_instance("tight"), context_window=400)
    assert (unfit_reason(tight, needs) or "").startswith("context window 400 tokens < prompt ~450")
    assert counted == [1]


@pytest.mark.parametrize("mode", ["ordered", "weighted", "intent_classifier", "auto"])
@pytest.mark.parametrize(("body", "lacking", "reason"), RULES)
def test_every_mode_skips_the_target_that_cannot_serve_and_records_why(mode, body, lacking, reason):
    unable = replace(make_instance("unable", quality_tier=5), **lacking)
    able = make_instance("able", quality_tier=1)
    balancer = make_balancer(
        make_route("primary", unable, priority=1, weight=100, is_default=True),
        make_route("fallback", able, priority=2, weight=0),
        mode=mode,
    )
    plan = plan_attempts(balancer, make_routing(), needs=needs_of(body))
    attempt = plan.next()
    assert attempt is not None and attempt.instance.instance_id == "able"
    assert [(m.instance.instance_id, why.startswith(reason)) for _, m, why in plan.skipped] == [
        ("unable", True)
    ]
    assert plan.capable
    plan.failed()
    assert plan.next() is None  # never the unable one, not even as a last resort


def test_when_no_target_can_serve_the_plan_says_so_and_offers_no_attempt():
    unable = replace(make_instance("unable"), supports_tools=False)
    balancer = make_balancer(make_route("only", unable))
    plan = plan_attempts(balancer, make_routing(), needs=needs_of(ask(tools=[TOOL])))
    assert not plan.capable
    assert plan.next() is None


def test_context_length_refusal_fails_over_to_a_larger_window_only():
    small = replace(make_instance("small-8k"), context_window=8_192)
    same = replace(make_instance("also-8k"), context_window=8_192)
    smaller = replace(make_instance("tiny-4k"), context_window=4_096)
    large = replace(make_instance("large-128k"), context_window=128_000)
    balancer = make_balancer(
        make_route("a", small, priority=1),
        make_route("b", same, priority=2),
        make_route("c", smaller, priority=3),
        make_route("d", large, priority=4),
        budget=5,
    )
    routing = make_routing()
    plan = plan_attempts(balancer, routing, needs=needs_of(ask()))
    first = plan.next()
    assert first is not None and first.instance.instance_id == "small-8k"
    plan.outgrown()
    second = plan.next()
    assert second is not None and second.instance.instance_id == "large-128k"
    assert {m.instance.instance_id: why for _, m, why in plan.skipped} == {
        "also-8k": "context window 8192 tokens not larger than small-8k's 8192, which refused the "
        "prompt as too long",
        "tiny-4k": "context window 4096 tokens not larger than small-8k's 8192, which refused the "
        "prompt as too long",
    }
    # No health penalty: the refusing instance answered.
    assert routing.health.success_rate(small.pk) == 1.0
    assert routing.health.is_eligible(small.pk, routing.clock())


def rank(balancer, request):
    return rank_auto(balancer, request, health=HealthTracker(), load=LoadStats(), now=1000.0)


def test_the_prompt_difficulty_term_moves_balanced_auto_down_the_tiers_or_up():
    cheap = make_instance("cheap", quality_tier=2, input_price=0.05, output_price=0.10)
    premium = make_instance("premium", quality_tier=5, input_price=10, output_price=30)
    balancer = make_balancer(make_route("auto", make_group(cheap, premium)), mode="auto")

    def pick(difficulty):
        ranking = rank(balancer, AutoRequest(difficulty=difficulty))
        return [r.instance.instance_id for r in ranking.ranked], ranking.ranked

    easy_order, easy = pick(0.05)
    hard_order, hard = pick(0.95)
    assert easy_order == ["cheap", "premium"]
    assert hard_order == ["premium", "cheap"]
    # The term is in the breakdown: weight 0.20 x (1 - |difficulty - quality factor|).
    top_hard = hard[0].terms()
    assert top_hard["difficulty"] == pytest.approx(0.20 * (1 - abs(0.95 - 1.0)))
    assert easy[0].terms()["difficulty"] == pytest.approx(0.20 * (1 - abs(0.05 - 0.25)))
    # Unknown difficulty: the term is 0 for everyone, the rest decides (the cheap one's price).
    unknown_order, unknown = pick(None)
    assert unknown_order == ["cheap", "premium"]
    assert all(r.terms()["difficulty"] == 0.0 for r in unknown)


def test_preferences_other_than_balanced_ignore_the_difficulty():
    cheap = make_instance("cheap", quality_tier=2, input_price=0.05, output_price=0.10)
    premium = make_instance("premium", quality_tier=5, input_price=10, output_price=30)
    balancer = make_balancer(make_route("auto", make_group(cheap, premium)), mode="auto")
    for preference, first in (("cost", "cheap"), ("quality", "premium")):
        for difficulty in (0.0, 1.0):
            ranked = rank(balancer, AutoRequest(preference=preference, difficulty=difficulty))
            assert ranked.ranked[0].instance.instance_id == first
            assert ranked.ranked[0].terms()["difficulty"] == 0.0


def test_auto_skips_the_unfit_with_the_capability_reason_and_keeps_them_out_of_the_pool():
    blind = replace(make_instance("blind"), supports_vision=False)
    seeing = make_instance("seeing")
    balancer = make_balancer(make_route("auto", make_group(blind, seeing)), mode="auto")
    body = ask([IMAGE])
    plan = plan_attempts(balancer, make_routing(), auto=AutoRequest(), needs=needs_of(body))
    assert plan.auto is not None
    assert [(s.instance.instance_id, s.reason) for s in plan.auto.skipped] == [
        ("blind", SKIP_VISION)
    ]
    assert plan.auto.pool == frozenset({seeing.pk})
