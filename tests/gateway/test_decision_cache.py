"""The decision cache keys a prompt by a digest of its normalised text, not by the text."""

from __future__ import annotations

import asyncio

import pytest

from gateway.hotpath import decision as decisions
from gateway.hotpath.snapshot import build_config
from tests.factories import make_balancer, make_instance, make_router_model

pytestmark = pytest.mark.django_db


def test_a_cached_decision_holds_a_16_byte_digest_of_the_prompt_not_the_prompt() -> None:
    balancer = make_balancer(
        routing_mode="intent_classifier",
        router_model=make_router_model(),
        routes=[
            {
                "name": "cooking",
                "intent": "Cooking, recipes and kitchen questions.",
                "instance": make_instance(),
                "priority": 1,
                "is_default": True,
            },
            {
                "name": "football",
                "intent": "Football matches, players and rules.",
                "instance": make_instance(),
                "priority": 2,
            },
        ],
    )
    spec = build_config(2001).routing.balancers[balancer.serving_name]
    decisions._cache.clear()
    long_prompt = "How long should I boil an egg? " + "Also, the water is salted. " * 60

    def ask(text: str) -> decisions.Decision:
        return asyncio.run(decisions.classify(spec, 2001, [{"role": "user", "content": text}]))

    first = ask(long_prompt)
    assert not first.cached and first.route is not None and first.route.name == "cooking"
    (key,) = list(decisions._cache._data)
    assert key[:2] == (2001, balancer.pk)
    assert isinstance(key[2], bytes) and len(key[2]) == 16
    # Case and runs of white space still fold into the same entry.
    again = ask("  " + long_prompt.upper().replace(" ", "   \n"))
    assert again.cached and again.route == first.route
    assert len(decisions._cache._data) == 1
    assert not ask("Who won the last World Cup?").cached
    assert len(decisions._cache._data) == 2
