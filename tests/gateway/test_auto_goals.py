"""`model="auto"` and its goal names, `model_routing_config` and `models`, through the official
openai SDK against the real server, with controlled live figures: instances made slow, down or
expensive."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from tests.factories import make_api_key, make_balancer
from tests.gateway.test_openai_sdk import wait_for_events
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)

HI = [{"role": "user", "content": "Hello"}]
CHAT_FIELDS = frozenset(
    {"model", "messages", "stream", "stream_options", "temperature", "max_tokens"}
)


def fleet(setup: Any) -> dict[str, Any]:
    """Three chat instances, each with one clear profile: a cheap one, a premium one, a coder."""
    return {
        "cheap": setup.instance(
            "cheap-model",
            Behaviour(content="cheap"),
            quality_tier=2,
            input_price_per_million="0.05",
            output_price_per_million="0.10",
        ),
        "premium": setup.instance(
            "premium-model",
            Behaviour(content="premium"),
            quality_tier=5,
            input_price_per_million="10",
            output_price_per_million="30",
        ),
        "coder": setup.instance(
            "qwen2.5-coder-32b",
            Behaviour(content="coder"),
            quality_tier=3,
            input_price_per_million="0.50",
            output_price_per_million="1.50",
        ),
    }


def ask(client: openai.OpenAI, model: str, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(model=model, messages=HI, **extra)


@pytest.mark.parametrize(
    ("goal", "expected", "decision"),
    [
        ("auto-cheap", "cheap-model", "auto:cost"),
        ("auto-best", "premium-model", "auto:quality"),
        ("auto-code", "qwen2.5-coder-32b", "auto:code"),
    ],
)
def test_each_goal_name_picks_its_model_with_no_balancer_created(setup, goal, expected, decision):
    fleet(setup)
    raw = ask(setup.client(), goal)
    assert raw.parse().model == expected
    assert raw.headers["x-balancer"] == goal
    assert raw.headers["x-balancer-decision"] == decision
    [event] = wait_for_events(1, serving_name=goal)
    assert (
        event.balancer_id is None and event.model == expected and event.decision_reason == decision
    )


def premium_made_slow(setup: Any, client: openai.OpenAI) -> int:
    """premium-model answers 0.5 s late; it and the coder are measured once through a pool of
    one, so the balanced ranking sees premium's speed fall (speed = coder's latency / its own)."""
    setup.upstream.behaviour("premium-model").delay = 0.5
    for model in ("premium-model", "qwen2.5-coder-32b"):
        pool = {"model_routing_config": {"models": [model]}}
        assert ask(client, "auto", extra_body=pool).parse().model == model
    return 2  # calls made through `auto`


def free_pair(setup: Any, client: openai.OpenAI) -> int:
    """Two zero-priced models beside the priced fleet: auto-free ranks only these."""
    for model, tier in (("free-big", 3), ("free-small", 1)):
        setup.instance(
            model,
            Behaviour(content=model),
            quality_tier=tier,
            input_price_per_million="0",
            output_price_per_million="0",
        )
    setup.gateway.wait_for_config()
    return 0


@pytest.mark.parametrize(
    ("goal", "down", "then", "prepare"),
    [
        ("auto-cheap", "cheap-model", "qwen2.5-coder-32b", None),  # next cheapest
        ("auto-best", "premium-model", "qwen2.5-coder-32b", None),  # next quality tier
        ("auto-code", "qwen2.5-coder-32b", "premium-model", None),  # no other coder: best quality
        # balanced, on "Hello" (easy): cheap 0.93, premium 0.75, coder 0.72 with equal speeds;
        # premium made slow drops to about 0.47, so the failover skips it for the coder.
        ("auto", "cheap-model", "qwen2.5-coder-32b", premium_made_slow),
        # zero-priced only: free-big (tier 3) first, then free-small, never a priced model.
        ("auto-free", "free-big", "free-small", free_pair),
    ],
)
def test_each_goal_fails_over_down_its_ranking_when_its_first_choice_is_down(
    setup, goal, down, then, prepare
):
    fleet(setup)
    client = setup.client()
    measured = 0 if prepare is None else prepare(setup, client)
    setup.upstream.behaviour(down).status = 500
    raw = ask(client, goal)
    assert raw.parse().model == then
    assert raw.headers["x-balancer-attempts"] == "2"
    event = wait_for_events(measured + 1, serving_name=goal)[-1]
    assert [
        (a["instance"].startswith("inst_"), a["outcome"], a["status"]) for a in event.attempt_log
    ] == [(True, "status", 500), (True, "ok", 200)]
    assert event.model == then


def test_auto_fast_picks_the_lowest_live_latency_and_fails_over_to_the_slower(setup):
    slow = setup.instance("slow-model", Behaviour(content="slow", delay=0.30))
    fast = setup.instance("fast-model", Behaviour(content="fast", delay=0.02))
    client = setup.client()
    # Measure each once, through a pool of one.
    for model in ("slow-model", "fast-model"):
        assert (
            ask(client, "auto-fast", extra_body={"model_routing_config": {"models": [model]}})
            .parse()
            .model
            == model
        )
    for _ in range(3):
        assert ask(client, "auto-fast").parse().model == "fast-model"
    explain = httpx.post(
        setup.gateway.v1 + "/explain",
        json={"model": "auto-fast", "messages": HI},
        headers={"Authorization": f"Bearer {client.api_key}"},
    ).json()
    assert [c["instance"] for c in explain["ranking"]] == [fast.instance_id, slow.instance_id]
    latency = {c["instance"]: c["latency_ms"] for c in explain["ranking"]}
    assert latency[slow.instance_id] > 250 > 100 > latency[fast.instance_id]
    setup.upstream.behaviour("fast-model").status = 503
    raw = ask(client, "auto-fast")
    assert raw.parse().model == "slow-model" and raw.headers["x-balancer-attempts"] == "2"


def test_auto_made_expensive_loses_to_a_cheaper_one_under_cost_but_not_under_quality(setup):
    a = setup.instance("model-a", quality_tier=4)
    setup.instance("model-b", quality_tier=3)
    client = setup.client()
    assert ask(client, "auto-cheap").parse().model in {"model-a", "model-b"}
    a.input_price_per_million, a.output_price_per_million = 40, 120
    a.save()
    setup.gateway.wait_for_config()
    assert ask(client, "auto-cheap").parse().model == "model-b"
    assert ask(client, "auto-best").parse().model == "model-a"


def test_auto_free_serves_only_zero_priced_models_and_names_the_reason_when_there_is_none(setup):
    setup.instance("priced-model")
    client = setup.client()
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, "auto-free")
    error = refused.value.body
    assert (
        error["code"] == "no_free_model"
        and error["param"] == "model"
        and "zero-priced" in error["message"]
    )
    setup.instance("free-model", input_price_per_million="0", output_price_per_million="0")
    setup.gateway.wait_for_config()
    raw = ask(client, "auto-free")
    assert (
        raw.parse().model == "free-model" and raw.headers["x-balancer-decision"] == "auto:balanced"
    )


@pytest.mark.parametrize(
    ("preference", "expected"),
    [
        ("cost", "cheap-model"),
        ("quality", "premium-model"),
        ("balanced", "cheap-model"),
        ("speed", "cheap-model"),
        ("code", "premium-model"),
    ],
)
def test_model_routing_config_narrows_the_pool_sets_the_preference_and_never_reaches_the_upstream(
    setup, preference, expected
):
    fleet(setup)
    setup.upstream.known_fields = CHAT_FIELDS  # a strict upstream: an unknown field is a 400
    config = {"models": ["cheap-model", "premium-model"], "preference": preference}
    raw = ask(setup.client(), "auto", extra_body={"model_routing_config": config})
    # balanced: the cheap one's price outweighs the premium one's tier; speed: both unmeasured, tie
    # on
    # load, then cost and quality weigh 0.05 each: the cheap one's price wins. code: neither is a
    # coder.
    assert raw.parse().model == expected
    assert raw.headers["x-balancer-decision"] == f"auto:{preference}"
    assert all(
        "model_routing_config" not in r and "models" not in r for r in setup.upstream.requests
    )


def test_a_balancer_in_auto_mode_takes_model_routing_config_and_consumes_it(setup):
    models = fleet(setup)
    setup.upstream.known_fields = CHAT_FIELDS
    make_balancer(
        serving_name="tuned",
        routing_mode="auto",
        auto_preference="cost",
        routes=[
            {
                "name": "a",
                "intent": "A.",
                "instance": models["cheap"],
                "priority": 1,
                "is_default": True,
            },
            {"name": "b", "intent": "B.", "instance": models["premium"], "priority": 2},
        ],
    )
    client = setup.client()
    assert ask(client, "tuned").parse().model == "cheap-model"
    raw = ask(client, "tuned", extra_body={"model_routing_config": {"preference": "quality"}})
    assert (
        raw.parse().model == "premium-model"
        and raw.headers["x-balancer-decision"] == "auto:quality"
    )
    # The coder is not in this balancer: not a model this request may name.
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, "tuned", extra_body={"model_routing_config": {"models": ["qwen2.5-coder-32b"]}})
    assert refused.value.body["param"] == "model_routing_config.models[0]"


def test_a_non_auto_balancer_refuses_model_routing_config_as_a_strict_upstream_would(
    setup,
):
    inst = setup.instance("strict-model")
    setup.upstream.known_fields = CHAT_FIELDS
    make_balancer(
        serving_name="plain",
        routes=[
            {"name": "main", "intent": "All.", "instance": inst, "priority": 1, "is_default": True}
        ],
    )
    client = setup.client()
    with pytest.raises(openai.BadRequestError) as upstream_refusal:  # the strict upstream itself
        ask(client, "plain", extra_body={"logit_whatever": 1})
    assert "Unrecognized request argument" in upstream_refusal.value.body["message"]
    before = len(setup.upstream.requests)
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, "plain", extra_body={"model_routing_config": {"preference": "cost"}})
    assert refused.value.body["param"] == "model_routing_config"
    assert refused.value.body["code"] == "routing_config_not_applicable"
    assert len(setup.upstream.requests) == before


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"model_routing_config": {"preference": "fastest"}}, "model_routing_config.preference"),
        ({"model_routing_config": {"models": ["no-such-model"]}}, "model_routing_config.models[0]"),
        ({"model_routing_config": {"models": "cheap-model"}}, "model_routing_config.models"),
        ({"model_routing_config": ["cheap-model"]}, "model_routing_config"),
        ({"model_routing_config": {"pool": ["cheap-model"]}}, "model_routing_config.pool"),
        ({"models": ["cheap-model", 7]}, "models[1]"),
        ({"models": []}, "models"),
    ],
)
def test_a_malformed_routing_config_is_a_400_naming_the_field(setup, extra, param):
    fleet(setup)
    with pytest.raises(openai.BadRequestError) as refused:
        ask(setup.client(), "auto", extra_body=extra)
    assert refused.value.status_code == 400 and refused.value.body["param"] == param
    assert setup.upstream.requests == []


def test_a_models_fallback_list_is_tried_in_its_order(setup):
    fleet(setup)
    setup.upstream.known_fields = CHAT_FIELDS
    setup.upstream.behaviour("premium-model").status = 502
    client = setup.client()
    # Under cost the cheap model would go first; the list puts premium, then the coder, first.
    raw = ask(
        client,
        "auto-cheap",
        extra_body={"models": ["premium-model", "qwen2.5-coder-32b", "cheap-model"]},
    )
    assert raw.parse().model == "qwen2.5-coder-32b" and raw.headers["x-balancer-attempts"] == "2"
    assert [r["model"] for r in setup.upstream.requests] == ["premium-model", "qwen2.5-coder-32b"]
    assert all("models" not in r for r in setup.upstream.requests)


def test_a_key_limited_to_balancers_reaches_only_their_instances_through_auto(setup):
    models = fleet(setup)
    mine = make_balancer(
        serving_name="mine",
        routes=[
            {
                "name": "main",
                "intent": "All.",
                "instance": models["cheap"],
                "priority": 1,
                "is_default": True,
            }
        ],
    )
    _, secret = make_api_key(balancers=[mine])
    client = setup.client(secret)
    for _ in range(3):
        assert ask(client, "auto-best").parse().model == "cheap-model"  # premium is not this key's
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, "auto", extra_body={"models": ["premium-model"]})
    assert (
        refused.value.body["param"] == "models[0]"
        and "premium-model" not in refused.value.body["message"].split("may use:")[1]
    )


# Over the fleet and the free pair: balanced and cost take free-big (price 0, the higher of the
# two free tiers); code, quality and free as their names say.
GOAL_PICKS = {
    "auto": "free-big",
    "auto-cheap": "free-big",
    "auto-fast": None,  # nothing measured yet: every speed factor is 1, any may win
    "auto-code": "qwen2.5-coder-32b",
    "auto-best": "premium-model",
    "auto-free": "free-big",
}


@pytest.mark.parametrize("goal", list(GOAL_PICKS))
def test_streaming_and_async_clients_call_each_goal_name(setup, goal):
    fleet(setup)
    client = setup.client()
    free_pair(setup, client)
    expected = GOAL_PICKS[goal]
    chunks = list(client.chat.completions.create(model=goal, messages=HI, stream=True))
    served = {c.model for c in chunks}
    assert len(served) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    (model,) = served
    assert text.startswith(setup.upstream.behaviour(model).content.split()[0])
    if expected is not None:
        assert model == expected
    if goal == "auto-free":
        assert model in {"free-big", "free-small"}

    async def call() -> Any:
        async_client = openai.AsyncOpenAI(
            base_url=setup.gateway.v1, api_key=client.api_key, max_retries=0
        )
        try:
            plain = await async_client.chat.completions.with_raw_response.create(
                model=goal, messages=HI
            )
            pooled = await async_client.chat.completions.create(
                model=goal,
                messages=HI,
                extra_body={"model_routing_config": {"models": ["free-small"]}},
            )
            return plain, pooled
        finally:
            await async_client.close()

    plain, pooled = asyncio.run(call())
    assert plain.headers["x-balancer"] == goal
    assert plain.headers["x-balancer-decision"].startswith("auto:")
    if expected is not None:
        assert plain.parse().model == expected
    assert pooled.model == "free-small"  # a pool of one zero-priced model suits every goal


def test_auto_on_embeddings_ranks_embedding_models_only(setup):
    fleet(setup)
    setup.instance(
        "embed-small",
        workload_kind="embeddings",
        input_price_per_million="0.02",
        output_price_per_million="0",
    )
    result = setup.client().embeddings.create(model="auto", input="hi")
    assert result.model == "embed-small"
    [event] = wait_for_events(1, serving_name="auto", endpoint="embeddings")
    assert event.model == "embed-small" and event.balancer_id is None


def test_explain_shows_each_candidate_score_terms_and_why_the_others_were_skipped(setup):
    fleet(setup)
    setup.instance("gone-model", enabled=False)
    client = setup.client()
    answer = httpx.post(
        setup.gateway.v1 + "/explain",
        headers={"Authorization": f"Bearer {client.api_key}"},
        json={
            "model": "auto",
            "messages": HI,
            "model_routing_config": {
                "models": ["cheap-model", "premium-model"],
                "preference": "quality",
            },
        },
    ).json()
    assert answer["reason"] == "auto:quality"
    assert [c["model"] for c in answer["ranking"]] == ["premium-model", "cheap-model"]
    top = answer["ranking"][0]
    assert set(top["terms"]) == {
        "quality",
        "speed",
        "cost",
        "load",
        "strength",
        "difficulty",
        "demand",
        "availability",
    }
    assert top["terms"]["quality"] == pytest.approx(
        0.85
    )  # tier 5: factor 1 times the quality weight
    assert {s["model"]: s["reason"] for s in answer["skipped"]} == {
        "qwen2.5-coder-32b": "not in the requested pool (model_routing_config.models)"
    }
    models = httpx.get(
        setup.gateway.v1 + "/models", headers={"Authorization": f"Bearer {client.api_key}"}
    ).json()
    # No zero-priced instance: every goal name but auto-free.
    assert [m["id"] for m in models["data"]] == [
        "auto",
        "auto-best",
        "auto-cheap",
        "auto-code",
        "auto-fast",
    ]


def test_the_demo_serves_every_goal_name_and_its_published_auto_balancer(setup):
    from balancers.demo import seed_demo

    seed_demo()
    client = setup.client()
    picks = {
        goal: ask(client, goal).parse().model
        for goal in ("auto-cheap", "auto-best", "auto-code", "auto-free")
    }
    assert picks == {
        "auto-cheap": "llama-local",
        "auto-best": "gpt-oss-120b",
        "auto-code": "qwen2.5-coder-7b",
        "auto-free": "llama-local",
    }
    raw = ask(
        client,
        "support-auto",
        extra_body={
            "model_routing_config": {
                "models": ["backup-small", "gpt-oss-120b"],
                "preference": "cost",
            }
        },
    )
    assert raw.parse().model == "backup-small" and raw.headers["x-balancer-decision"] == "auto:cost"
    assert raw.headers["x-balancer-route"] == "fallback"


def test_an_operator_publishes_an_auto_serving_name_that_ranks_by_code(setup):
    models = fleet(setup)
    make_balancer(
        serving_name="coding",
        routing_mode="auto",
        auto_preference="code",
        routes=[
            {
                "name": name,
                "intent": name,
                "instance": models[name],
                "priority": n,
                "is_default": n == 1,
            }
            for n, name in enumerate(("cheap", "premium", "coder"), start=1)
        ],
    )
    client = setup.client()
    raw = ask(client, "coding")
    assert (
        raw.parse().model == "qwen2.5-coder-32b"
        and raw.headers["x-balancer-decision"] == "auto:code"
    )
    assert raw.headers["x-balancer-route"] == "coder"
    setup.upstream.behaviour("qwen2.5-coder-32b").status = 500
    assert ask(client, "coding").parse().model == "premium-model"  # no other coder: quality next
