"""The built-in router is fitted when a config snapshot is built, and refitted when the config
changes."""

from __future__ import annotations

import pytest

from balancers.models import Route
from gateway.hotpath import decision as decisions
from gateway.hotpath.snapshot import build_config
from gateway.router_models.fitted import FittedIntentClassifier
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


def test_a_config_change_refits_the_router_at_snapshot_build():
    balancer = make_balancer(
        routing_mode="intent_classifier",
        router_model=make_router_model(),
        routes=[
            {
                "name": "alpha",
                "intent": "Questions.",
                "instance": make_instance(),
                "priority": 1,
                "is_default": True,
                "examples": COOKING,
            },
            {
                "name": "beta",
                "intent": "Questions.",
                "instance": make_instance(),
                "priority": 2,
                "examples": FOOTBALL,
            },
        ],
    )
    prompt = "What is the best way to bake bread at home?"

    first = build_config(1001)
    # Fitted with the snapshot, before any request asked for a decision.
    model = decisions._local_models[(1001, balancer.pk)]
    assert isinstance(model, FittedIntentClassifier)
    spec = first.routing.balancers[balancer.serving_name]
    assert decisions.local_classifier(spec, 1001).classify(prompt).route == "alpha"

    Route.objects.filter(balancer=balancer, name="alpha").update(examples=FOOTBALL)
    Route.objects.filter(balancer=balancer, name="beta").update(examples=COOKING)
    second = build_config(1002)
    assert (1002, balancer.pk) in decisions._local_models
    spec = second.routing.balancers[balancer.serving_name]
    assert decisions.local_classifier(spec, 1002).classify(prompt).route == "beta"
