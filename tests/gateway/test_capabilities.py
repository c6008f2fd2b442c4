"""Capability-aware routing through the real server and the official openai SDK: a request is never
sent to a target that cannot serve it (each rule), the skip is recorded (header, usage attempt log,
explain), an upstream's context-length refusal fails over to a larger window, and an operator's
value beats the model catalogue's default."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.factories import make_balancer
from tests.gateway.test_openai_sdk import wait_for_events
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)

IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
}
HI = [{"role": "user", "content": "Hello"}]

# (what the request carries, the primary's field that makes it unable, the reason's start)
RULES = [
    ({"messages": HI, "tools": [TOOL]}, {"supports_tools": False}, "no tool support"),
    (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "What?"}, IMAGE]}]},
        {"supports_vision": False},
        "no vision",
    ),
    (
        {"messages": HI, "response_format": {"type": "json_object"}},
        {"supports_json_mode": False},
        "no JSON mode",
    ),
    ({"messages": HI, "stream": True}, {"supports_streaming": False}, "no streaming"),
    (
        {"messages": [{"role": "user", "content": "word " * 400}]},
        {"context_window": 200},
        "context window 200 tokens < prompt ~",
    ),
    ({"messages": HI, "max_tokens": 5000}, {"max_output_tokens": 1000}, "max output 1000 tokens"),
]


def pair(setup: Any, lacking: dict[str, Any], **balancer: Any) -> tuple[Any, Any, Any]:
    unable = setup.instance("unable-model", Behaviour(content="unable"), **lacking)
    able = setup.instance("able-model", Behaviour(content="able"))
    return unable, able, setup.failover_balancer(unable, able, **balancer)


def create(client: openai.OpenAI, model: str, body: dict[str, Any]) -> Any:
    return client.chat.completions.with_raw_response.create(model=model, **body)


@pytest.mark.parametrize(("body", "lacking", "reason"), RULES)
def test_each_capability_rule_skips_the_target_and_records_why(setup, body, lacking, reason):
    unable, able, balancer = pair(setup, lacking)
    raw = create(setup.client(), balancer.serving_name, body)
    if body.get("stream"):
        chunks = list(raw.parse())
        assert chunks and chunks[0].model == "able-model"
    else:
        assert raw.parse().model == "able-model"
    assert raw.headers["x-balancer-attempts"] == "1"
    assert raw.headers["x-balancer-skipped"].startswith(f"{unable.instance_id}: {reason}")
    assert setup.upstream.count("unable-model") == 0  # never sent there
    [event] = wait_for_events(1, timeout=20, serving_name=balancer.serving_name)
    assert event.attempts == 1 and event.model == "able-model"
    skipped, served = event.attempt_log
    assert skipped["instance"] == unable.instance_id and skipped["outcome"] == "skipped"
    assert skipped["detail"].startswith(reason)
    assert served["instance"] == able.instance_id and served["outcome"] == "ok"


@pytest.mark.parametrize("mode", ["weighted", "auto"])
def test_weighted_and_auto_modes_skip_the_target_that_cannot_serve_too(setup, mode):
    blind = setup.instance("blind-model", Behaviour(content="blind"), supports_vision=False)
    seeing = setup.instance("seeing-model", Behaviour(content="seeing"))
    balancer = make_balancer(
        routing_mode=mode,
        routes=[
            {
                "name": "a",
                "intent": "A.",
                "instance": blind,
                "priority": 1,
                "weight": 100,
                "is_default": True,
            },
            {"name": "b", "intent": "B.", "instance": seeing, "priority": 2, "weight": 1},
        ],
    )
    body = {"messages": [{"role": "user", "content": [IMAGE]}]}
    for _ in range(3):
        assert create(setup.client(), balancer.serving_name, body).parse().model == "seeing-model"
    assert setup.upstream.count("blind-model") == 0


def test_auto_goal_names_skip_by_capability_and_explain_says_why(setup):
    setup.instance("no-tools-model", Behaviour(content="x"), supports_tools=False, quality_tier=5)
    setup.instance("tools-model", Behaviour(content="y"), quality_tier=1)
    client = setup.client()
    raw = create(client, "auto-best", {"messages": HI, "tools": [TOOL]})
    assert raw.parse().model == "tools-model"
    assert "no-tools-model" not in [r.get("model") for r in setup.upstream.requests]
    explained = httpx.post(
        setup.gateway.v1 + "/explain",
        headers={"Authorization": f"Bearer {client.api_key}"},
        json={"model": "auto-best", "messages": HI, "tools": [TOOL]},
    ).json()
    assert [c["model"] for c in explained["ranking"]] == ["tools-model"]
    assert {s["model"]: s["reason"] for s in explained["skipped"]} == {
        "no-tools-model": "no tool support (the request has tools)"
    }


def test_explain_names_the_capability_skips_of_a_route_balancer(setup):
    unable, _, balancer = pair(setup, {"supports_json_mode": False})
    client = setup.client()
    explained = httpx.post(
        setup.gateway.v1 + "/explain",
        headers={"Authorization": f"Bearer {client.api_key}"},
        json={
            "model": balancer.serving_name,
            "messages": HI,
            "response_format": {"type": "json_object"},
        },
    ).json()
    assert explained["skipped"] == [
        {
            "route": "primary",
            "instance": unable.instance_id,
            "model": "unable-model",
            "reason": "no JSON mode (the request sets response_format)",
        }
    ]


def test_when_no_target_can_serve_the_client_gets_a_400_naming_each_and_nothing_is_sent(setup):
    only = setup.instance("text-only-model", Behaviour(content="x"), supports_vision=False)
    balancer = make_balancer(
        routes=[{"name": "main", "intent": "All.", "instance": only, "is_default": True}]
    )
    with pytest.raises(openai.BadRequestError) as caught:
        create(
            setup.client(),
            balancer.serving_name,
            {"messages": [{"role": "user", "content": [IMAGE]}]},
        )
    error = caught.value.body
    assert error["code"] == "no_capable_model" and error["param"] == "model"
    assert f"{only.instance_id}: no vision" in error["message"]
    assert setup.upstream.count("text-only-model") == 0


OPENAI_TOO_LONG = {
    "error": {
        "message": "This model's maximum context length is 8192 tokens. However, your messages "
        "resulted in 9000 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
ANTHROPIC_TOO_LONG = {
    "type": "error",
    "error": {
        "type": "invalid_request_error",
        "message": "prompt is too long: 210000 tokens > 200000 maximum",
    },
}


@pytest.mark.parametrize(
    "refusal", [OPENAI_TOO_LONG, ANTHROPIC_TOO_LONG], ids=["openai", "anthropic"]
)
def test_a_context_length_refusal_fails_over_to_a_larger_window(setup, refusal):
    small = setup.instance(
        "small-window", Behaviour(status=400, error_body=refusal), context_window=8192
    )
    same = setup.instance("same-window", Behaviour(content="same"), context_window=8192)
    large = setup.instance("large-window", Behaviour(content="large"), context_window=128_000)
    balancer = make_balancer(
        attempt_budget=3,
        routes=[
            {"name": "a", "intent": "A.", "instance": small, "priority": 1, "is_default": True},
            {"name": "b", "intent": "B.", "instance": same, "priority": 2},
            {"name": "c", "intent": "C.", "instance": large, "priority": 3},
        ],
    )
    raw = create(setup.client(), balancer.serving_name, {"messages": HI})
    assert raw.parse().model == "large-window"
    assert raw.headers["x-balancer-attempts"] == "2"
    assert setup.upstream.count("same-window") == 0
    [event] = wait_for_events(1, timeout=20, serving_name=balancer.serving_name)
    assert [(a["instance"], a["outcome"]) for a in event.attempt_log] == [
        (small.instance_id, "context_length_exceeded"),
        (same.instance_id, "skipped"),
        (large.instance_id, "ok"),
    ]
    assert event.status_code == 200


def test_with_no_larger_window_the_client_gets_the_upstreams_context_length_error(setup):
    small = setup.instance(
        "small-only", Behaviour(status=400, error_body=OPENAI_TOO_LONG), context_window=8192
    )
    same = setup.instance("same-only", Behaviour(content="same"), context_window=4096)
    balancer = setup.failover_balancer(small, same)
    with pytest.raises(openai.BadRequestError) as caught:
        create(setup.client(), balancer.serving_name, {"messages": HI})
    assert caught.value.body["code"] == "context_length_exceeded"
    assert setup.upstream.count("same-only") == 0


def test_an_operator_value_beats_the_catalogue_default(setup):
    # gpt-4o takes images by the catalogue; this operator says it does not.
    said_no = setup.instance("gpt-4o", Behaviour(content="4o"), supports_vision=False)
    # gpt-3.5-turbo takes no images by the catalogue; this operator says it does.
    said_yes = setup.instance("gpt-3.5-turbo", Behaviour(content="35"), supports_vision=True)
    # Untouched, the catalogue's default applies: gpt-3.5-turbo without vision.
    default = setup.instance("gpt-3.5-turbo-0125", Behaviour(content="35b"))
    body = {"messages": [{"role": "user", "content": [IMAGE]}]}
    balancer = make_balancer(
        attempt_budget=3,
        routes=[
            {"name": "a", "intent": "A.", "instance": said_no, "priority": 1, "is_default": True},
            {"name": "b", "intent": "B.", "instance": default, "priority": 2},
            {"name": "c", "intent": "C.", "instance": said_yes, "priority": 3},
        ],
    )
    raw = create(setup.client(), balancer.serving_name, body)
    assert raw.parse().model == "gpt-3.5-turbo"
    assert raw.headers["x-balancer-skipped"] == (
        f"{said_no.instance_id}: no vision (the request has images); "
        f"{default.instance_id}: no vision (the request has images)"
    )


def test_the_difficulty_term_changes_autos_pick_and_explain_shows_it(setup):
    setup.instance(
        "cheap-model",
        Behaviour(content="cheap"),
        quality_tier=2,
        input_price_per_million="0.05",
        output_price_per_million="0.10",
    )
    setup.instance(
        "premium-model",
        Behaviour(content="premium"),
        quality_tier=5,
        input_price_per_million="10",
        output_price_per_million="30",
    )
    client = setup.client()
    easy = [{"role": "user", "content": "Hello"}]
    hard = [
        {
            "role": "user",
            "content": "Write a Python function that parses a CSV file, handles quoted fields with "
            "embedded newlines, and returns a list of dicts; include unit tests.",
        }
    ]
    picks = {}
    for name, messages in (("easy", easy), ("hard", hard)):
        explained = httpx.post(
            setup.gateway.v1 + "/explain",
            headers={"Authorization": f"Bearer {client.api_key}"},
            json={"model": "auto", "messages": messages},
        ).json()
        assert explained["reason"] == "auto:balanced"
        picks[name] = (explained["difficulty"], explained["ranking"])
        served = client.chat.completions.create(model="auto", messages=messages)
        assert served.model == explained["ranking"][0]["model"]
    easy_difficulty, easy_ranking = picks["easy"]
    hard_difficulty, hard_ranking = picks["hard"]
    assert easy_difficulty < 0.2 < 0.8 < hard_difficulty
    assert [c["model"] for c in easy_ranking] == ["cheap-model", "premium-model"]
    assert [c["model"] for c in hard_ranking] == ["premium-model", "cheap-model"]
    top = hard_ranking[0]["terms"]
    assert top["difficulty"] == pytest.approx(0.20 * (1 - abs(hard_difficulty - 1.0)), abs=1e-3)


TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def test_a_long_prompt_or_tools_move_auto_toward_a_stronger_tier_and_explain_shows_the_term(
    setup,
):
    """The request's size, tools and images are a term of the balanced ranking (demand,
    gateway/engine/auto.py), not only a filter: "Hello" ranks the tier-3 model first, the same
    prompt with tools or a prompt of 8,000+ tokens the tier-4 one."""
    setup.instance(
        "tier3-model", quality_tier=3, input_price_per_million="0.5", output_price_per_million="0.5"
    )
    setup.instance(
        "tier4-model", quality_tier=4, input_price_per_million="0.6", output_price_per_million="0.6"
    )
    client = setup.client()

    def explain(**body: Any) -> dict[str, Any]:
        response = httpx.post(
            setup.gateway.v1 + "/explain",
            json={"model": "auto", **body},
            headers={"Authorization": f"Bearer {client.api_key}"},
            timeout=20,
        )
        assert response.status_code == 200, response.text
        return response.json()

    plain = explain(messages=HI)
    assert plain["demand"] < 0.01  # about 5 tokens of 8,000
    assert [c["model"] for c in plain["ranking"]] == ["tier3-model", "tier4-model"]
    assert all(c["terms"]["demand"] < 0.002 for c in plain["ranking"])

    tools = explain(messages=HI, tools=[TOOL])
    assert tools["demand"] == 0.75
    assert [c["model"] for c in tools["ranking"]] == ["tier4-model", "tier3-model"]
    terms = {c["model"]: c["terms"]["demand"] for c in tools["ranking"]}
    assert terms == {"tier4-model": 0.1125, "tier3-model": 0.075}  # 0.20 x 0.75 x q

    long = [{"role": "user", "content": "Please read this note. " * 2500}]
    sized = explain(messages=long)
    assert sized["demand"] == 1.0
    assert [c["model"] for c in sized["ranking"]] == ["tier4-model", "tier3-model"]

    # And the gateway serves what explain ranks first.
    reply = client.chat.completions.create(model="auto", messages=HI, tools=[TOOL])
    assert reply.model == "tier4-model"
