"""intent_classifier routing: the LLM router over real HTTP, the local router, and /v1/explain."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest

from balancers.demo import seed_demo
from tests.factories import make_balancer
from tests.gateway.test_openai_sdk import wait_for_events
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)


def classifier_balancer(setup, router_answer: Behaviour, **fields):
    router = setup.instance("router-llm", router_answer)
    routes = [
        {
            "name": "efficient",
            "intent": "Short, simple tasks.",
            "instance": setup.instance("cheap"),
            "priority": 1,
        },
        {
            "name": "reasoning",
            "intent": "Hard multi-step problems.",
            "instance": setup.instance("strong"),
            "priority": 2,
            "examples": ["Prove this theorem."],
        },
        {
            "name": "fallback",
            "intent": "Anything else.",
            "instance": setup.instance("backup"),
            "priority": 3,
            "is_default": True,
        },
    ]
    return make_balancer(
        routing_mode="intent_classifier", router_model=router, routes=routes, **fields
    )


def ask(client, model: str, prompt: str):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}]
    )


def test_the_llm_router_names_a_route(setup):
    balancer = classifier_balancer(setup, Behaviour(content="reasoning"), serving_name="cls")
    raw = ask(setup.client(), "cls", "Prove that there are infinitely many primes.")
    assert raw.headers["x-balancer-route"] == "reasoning"
    assert raw.headers["x-balancer-decision"] == "classified"
    router_call = next(r for r in setup.upstream.requests if r["model"] == "router-llm")
    prompt_text = " ".join(m["content"] for m in router_call["messages"])
    assert (
        "reasoning" in prompt_text
        and "Hard multi-step problems." in prompt_text
        and "Prove this theorem." in prompt_text
    )
    [event] = wait_for_events(1, balancer=balancer)
    assert event.decision_reason == "classified" and event.classifier_ms is not None


def test_the_llm_router_answer_may_be_json_with_a_confidence(setup):
    classifier_balancer(
        setup,
        Behaviour(content='```json\n{"route": "efficient", "confidence": 0.92}\n```'),
        serving_name="cls-json",
    )
    raw = ask(setup.client(), "cls-json", "Say hi.")
    assert raw.headers["x-balancer-route"] == "efficient"


def test_an_unparsable_answer_picks_the_default(setup):
    classifier_balancer(
        setup, Behaviour(content="I am not sure what you mean."), serving_name="cls-bad"
    )
    raw = ask(setup.client(), "cls-bad", "Hmm?")
    assert (raw.headers["x-balancer-route"], raw.headers["x-balancer-decision"]) == (
        "fallback",
        "default:no_match",
    )


def test_low_confidence_picks_the_default(setup):
    classifier_balancer(
        setup,
        Behaviour(content='{"route": "efficient", "confidence": 0.2}'),
        serving_name="cls-low",
        confidence_threshold=0.5,
    )
    raw = ask(setup.client(), "cls-low", "Maybe easy?")
    assert (raw.headers["x-balancer-route"], raw.headers["x-balancer-decision"]) == (
        "fallback",
        "default:low_confidence",
    )


def test_a_slow_router_times_out_to_the_default(setup):
    classifier_balancer(
        setup,
        Behaviour(content="reasoning", delay=3.0),
        serving_name="cls-slow",
        classifier_timeout=0.3,
    )
    raw = ask(setup.client(), "cls-slow", "Anything.")
    assert (raw.headers["x-balancer-route"], raw.headers["x-balancer-decision"]) == (
        "fallback",
        "default:timeout",
    )
    assert raw.elapsed.total_seconds() < 2.0


def test_a_failing_router_picks_the_default(setup):
    classifier_balancer(setup, Behaviour(status=500), serving_name="cls-err")
    raw = ask(setup.client(), "cls-err", "Anything.")
    assert (raw.headers["x-balancer-route"], raw.headers["x-balancer-decision"]) == (
        "fallback",
        "default:error",
    )


def test_a_router_that_is_down_picks_the_default(setup):
    from tests.live_server import free_port

    balancer = classifier_balancer(setup, Behaviour(), serving_name="cls-down")
    router = balancer.router_model
    router.base_url = f"http://127.0.0.1:{free_port()}/v1"
    router.save()
    raw = ask(setup.client(), "cls-down", "Anything.")
    assert (raw.headers["x-balancer-route"], raw.headers["x-balancer-decision"]) == (
        "fallback",
        "default:error",
    )


def test_decisions_are_cached_and_identical_ones_in_flight_are_made_once(setup):
    classifier_balancer(setup, Behaviour(content="efficient", delay=0.3), serving_name="cls-cache")
    client = setup.client()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        routes = list(
            pool.map(
                lambda _: ask(client, "cls-cache", "Summarise   THIS.").headers["x-balancer-route"],
                range(4),
            )
        )
    assert routes == ["efficient"] * 4
    ask(client, "cls-cache", "summarise this.")
    assert setup.upstream.count("router-llm") == 1


def test_explain_says_where_a_prompt_would_go_without_calling_the_route(setup):
    classifier_balancer(setup, Behaviour(content="reasoning"), serving_name="cls-explain")
    client = setup.client()
    response = httpx.post(
        setup.gateway.v1 + "/explain",
        headers={"Authorization": f"Bearer {client.api_key}"},
        json={"model": "cls-explain", "messages": [{"role": "user", "content": "Prove it."}]},
    )
    body = response.json()
    assert body["route"] == "reasoning" and body["reason"] == "classified"
    assert body["order"] == ["reasoning", "efficient", "fallback"]
    assert body["classifier_ms"] is not None
    assert body["difficulty"] is None  # an LLM router model gives no difficulty score
    assert setup.upstream.count("strong") == 0


def test_the_demo_balancer_routes_the_brief_examples_with_the_local_router(setup):
    seed_demo()
    client = setup.client()
    easy = ask(client, "support-balancer", "Summarise this support reply.")
    hard = ask(client, "support-balancer", "Resolve a multi-step refund dispute.")
    assert easy.headers["x-balancer-route"] == "efficient"
    assert hard.headers["x-balancer-route"] == "reasoning"
    explained = httpx.post(
        setup.gateway.v1 + "/explain",
        headers={"Authorization": f"Bearer {client.api_key}"},
        json={
            "model": "support-balancer",
            "messages": [{"role": "user", "content": "Resolve a multi-step refund dispute."}],
        },
    ).json()
    assert explained["route"] == "reasoning" and set(explained["scores"]) == {
        "efficient",
        "reasoning",
        "fallback",
    }
    # The local router's learned difficulty score: the refund dispute is the harder prompt.
    easy_explained = httpx.post(
        setup.gateway.v1 + "/explain",
        headers={"Authorization": f"Bearer {client.api_key}"},
        json={
            "model": "support-balancer",
            "messages": [{"role": "user", "content": "Summarise this support reply."}],
        },
    ).json()
    assert 0.0 <= easy_explained["difficulty"] < explained["difficulty"] <= 1.0
