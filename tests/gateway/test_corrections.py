"""Learning from corrections (gateway.corrections): a prompt the router sent to the wrong route
becomes an example of the right one, is audited, and changes the decision once the router is
refitted at the next snapshot; every refusal changes nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from balancers.models import AuditEntry, Balancer, Route
from gateway.corrections import CorrectionRefused, correction_apply, correction_offer
from gateway.hotpath.decision import decide
from gateway.hotpath.snapshot import build_config
from gateway.models import RoutingCorrection, UsageEvent
from tests.factories import make_balancer, make_instance, make_router_model

pytestmark = pytest.mark.django_db

COOKING = [
    "How long should I boil an egg?",
    "Give me a recipe for tomato soup.",
    "What temperature do I roast a chicken at?",
    "How do I make pancakes fluffy?",
]
FOOTBALL = [
    "Who won the last World Cup?",
    "Explain the offside rule.",
    "How many players are on a football team?",
    "When does the Premier League start?",
]
# About the food at football grounds: the fitted router sends it to cooking (confidence 0.83);
# the operator of this balancer wants it on football.
PROMPT = "What do stadiums cook for the fans at half time?"


def kitchen_and_pitch(**fields: Any) -> Balancer:
    fields = {"router_model": make_router_model(), "log_prompts": True, **fields}
    return make_balancer(
        routing_mode="intent_classifier",
        routes=[
            {
                "name": "cooking",
                "intent": "Cooking questions.",
                "instance": make_instance(),
                "priority": 1,
                "is_default": True,
                "examples": COOKING,
            },
            {
                "name": "football",
                "intent": "Football questions.",
                "instance": make_instance(),
                "priority": 2,
                "examples": FOOTBALL,
            },
        ],
        **fields,
    )


def routed(balancer: Balancer, version: int, prompt: str = PROMPT) -> tuple[str, str]:
    """(route, reason) of the gateway's decision for the prompt, from a snapshot built now."""
    spec = build_config(version).routing.balancers[balancer.serving_name]
    payload = {"model": spec.serving_name, "messages": [{"role": "user", "content": prompt}]}
    decision = asyncio.run(decide(spec, version, payload, None))
    assert decision.route is not None
    return decision.route.name, decision.reason


def served(balancer: Balancer, request_id: str, route: str, prompt: str = PROMPT, **fields: Any):
    return UsageEvent.objects.create(
        created_at=datetime.now(UTC),
        request_id=request_id,
        endpoint="chat",
        balancer=balancer,
        serving_name=balancer.serving_name,
        route=route,
        decision_reason=fields.pop("decision_reason", "classified"),
        attempts=1,
        attempt_log=[{"route": route, "instance": "x", "outcome": "ok", "status": 200}],
        status_code=200,
        latency_ms=12.0,
        prompt_text=prompt,
        **fields,
    )


def test_a_correction_becomes_an_example_and_changes_the_decision_after_the_refit(
    admin_user,
) -> None:
    balancer = kitchen_and_pitch()
    assert routed(balancer, 2001) == ("cooking", "classified")
    served(balancer, "req-1", "cooking")

    correction = correction_apply(
        user=admin_user,
        balancer=balancer,
        request_id="req-1",
        route="football",
        confirmed=True,
        source="usage",
    )

    football = Route.objects.get(balancer=balancer, name="football")
    assert football.examples == [*FOOTBALL, PROMPT]
    assert Route.objects.get(balancer=balancer, name="cooking").examples == COOKING
    # The next snapshot refits the router: the same prompt now goes where the operator said.
    assert routed(balancer, 2002) == ("football", "classified")
    # Before and after, on the balancer's one corrected example.
    assert (correction.corrected_examples, correction.accuracy_before) == (1, 0.0)
    assert correction.accuracy_after == 1.0
    assert (correction.decided_route, correction.route, correction.source) == (
        "cooking",
        "football",
        "usage",
    )
    entry = AuditEntry.objects.get()
    assert (entry.username, entry.action, entry.balancer_id) == (
        admin_user.username,
        "routing corrected",
        balancer.pk,
    )
    assert entry.object_label == f"cooking -> football: {PROMPT}"
    assert entry.detail["right_before"] == 0 and entry.detail["right_after"] == 1


def test_accuracy_is_measured_on_every_corrected_example_still_in_place(admin_user) -> None:
    balancer = kitchen_and_pitch()
    served(balancer, "req-1", "cooking")
    correction_apply(
        user=admin_user,
        balancer=balancer,
        request_id="req-1",
        route="football",
        confirmed=True,
        source="board",
    )
    second = "What should I cook for my friends watching the cup final?"
    assert routed(balancer, 2003, second) == ("cooking", "classified")
    served(balancer, "req-2", "cooking", second)
    correction = correction_apply(
        user=admin_user,
        balancer=balancer,
        request_id="req-2",
        route="football",
        confirmed=True,
        source="board",
    )
    # Both corrected examples: the first one right before (it is an example already), both after.
    assert correction.corrected_examples == 2
    assert (correction.accuracy_before, correction.accuracy_after) == (0.5, 1.0)
    assert routed(balancer, 2004, second) == ("football", "classified")


def test_a_prompt_corrected_again_moves_to_the_new_route(admin_user) -> None:
    balancer = kitchen_and_pitch()
    served(balancer, "req-1", "cooking")
    correction_apply(
        user=admin_user,
        balancer=balancer,
        request_id="req-1",
        route="football",
        confirmed=True,
        source="usage",
    )
    served(balancer, "req-2", "football")
    correction_apply(
        user=admin_user,
        balancer=balancer,
        request_id="req-2",
        route="cooking",
        confirmed=True,
        source="usage",
    )
    assert PROMPT not in Route.objects.get(balancer=balancer, name="football").examples
    assert Route.objects.get(balancer=balancer, name="cooking").examples == [*COOKING, PROMPT]
    assert routed(balancer, 2005) == ("cooking", "classified")


def refused(balancer: Balancer, user: Any, **overrides: Any) -> str:
    examples = {r.name: list(r.examples) for r in balancer.routes.all()}
    arguments = {
        "user": user,
        "balancer": balancer,
        "request_id": "req-1",
        "route": "football",
        "confirmed": True,
        "source": "usage",
        **overrides,
    }
    with pytest.raises(CorrectionRefused) as refusal:
        correction_apply(**arguments)
    assert {r.name: list(r.examples) for r in balancer.routes.all()} == examples
    assert not RoutingCorrection.objects.exists() and not AuditEntry.objects.exists()
    return str(refusal.value)


def test_without_prompt_logging_the_control_says_why_and_nothing_is_learned(admin_user) -> None:
    balancer = kitchen_and_pitch(log_prompts=False)
    served(balancer, "req-1", "cooking", prompt="")
    offer = correction_offer(balancer=balancer, request_id="req-1")
    assert offer.unavailable.startswith("Prompt logging is off for this balancer")
    assert "Prompt logging is off" in refused(balancer, admin_user)


def test_refusals_say_why_and_change_nothing(admin_user) -> None:
    balancer = kitchen_and_pitch()
    served(balancer, "req-1", "cooking")
    assert "Confirm" in refused(balancer, admin_user, confirmed=False)
    assert "already sent this prompt to cooking" in refused(balancer, admin_user, route="cooking")
    assert "has no route 'nope'" in refused(balancer, admin_user, route="nope")
    assert "not recorded yet" in refused(balancer, admin_user, request_id="req-unknown")
    served(balancer, "req-rule", "football", decision_reason="rule:sport")
    assert "did not choose this route (rule:sport)" in refused(
        balancer, admin_user, request_id="req-rule", route="cooking"
    )
    served(balancer, "req-old", "cooking", prompt="")
    assert "No prompt was kept" in refused(balancer, admin_user, request_id="req-old")
    Route.objects.filter(balancer=balancer, name="football").update(
        examples=[f"football question {n}" for n in range(50)]
    )
    assert "has 50 examples already" in refused(balancer, admin_user)


def test_an_ordered_balancer_or_an_llm_router_has_no_corrections(admin_user) -> None:
    ordered = make_balancer(log_prompts=True)
    served(ordered, "req-o", "main", decision_reason="ordered")
    assert (
        "routes in ordered mode"
        in correction_offer(balancer=ordered, request_id="req-o").unavailable
    )
    llm = kitchen_and_pitch(router_model=make_instance(model="router-llm"))
    served(llm, "req-l", "cooking")
    assert "router is an LLM" in correction_offer(balancer=llm, request_id="req-l").unavailable
