"""Hostile upstream answers: impossible usage is replaced by estimates, malformed answers fail
over."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.factories import make_api_key, make_balancer, make_instance
from tests.gateway.hostile_upstream import Script
from tests.gateway.test_openai_sdk import wait_for_events

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "hello there"}]
MAX_TOKENS_COLUMN = 2_147_483_647  # PostgreSQL integer: what the usage writer's COPY accepts


def hostile_instance(
    hostile, model: str, script: Script | None = None, provider: str = "openai", **fields
):
    hostile.scripts[model] = script or Script()
    return make_instance(
        provider=provider,
        base_url=hostile.base_url,
        model=model,
        api_key=f"sk-UPSTREAM-SECRET-{secrets.token_hex(12)}",
        **fields,
    )


def one_route(instance, serving_name: str, **fields):
    return make_balancer(
        serving_name=serving_name,
        routes=[
            {
                "name": "main",
                "intent": "All.",
                "instance": instance,
                "priority": 1,
                "is_default": True,
            }
        ],
        **fields,
    )


def two_routes(primary, fallback, serving_name: str):
    return make_balancer(
        serving_name=serving_name,
        routes=[
            {
                "name": "primary",
                "intent": "First.",
                "instance": primary,
                "priority": 1,
                "is_default": True,
            },
            {"name": "fallback", "intent": "Second.", "instance": fallback, "priority": 2},
        ],
    )


@pytest.mark.parametrize(
    ("usage", "dropped"),
    [
        ({"prompt_tokens": 11, "completion_tokens": -16}, "completion_tokens -16 is negative"),
        ({"prompt_tokens": 5e9, "completion_tokens": 7}, "prompt_tokens 5e+09 is over 10,000,000"),
        (
            {"prompt_tokens": 11, "completion_tokens": 7.5},
            "completion_tokens 7.5 is not a whole number",
        ),
    ],
)
def test_impossible_token_counts_are_replaced_by_the_estimate_and_noted(
    setup, hostile_upstream, usage, dropped
):
    tag = dropped.split()[0] + str(len(dropped))
    inst = hostile_instance(hostile_upstream, f"usage-{tag}", Script(usage=usage))
    balancer = one_route(inst, f"impossible-{tag}")
    reply = setup.client().chat.completions.create(model=balancer.serving_name, messages=HELLO)
    assert reply.choices[0].message.content == "Hello from a hostile upstream."
    [event] = wait_for_events(1, balancer=balancer)
    assert event.status_code == 200
    assert (
        0 <= event.prompt_tokens < MAX_TOKENS_COLUMN
        and 0 <= event.completion_tokens < MAX_TOKENS_COLUMN
    )
    assert (
        0 < event.prompt_tokens < 100 and 0 < event.completion_tokens < 100
    )  # the request's own estimates
    assert dropped in event.usage_note and event.usage_note.endswith("estimated")
    assert event.cost_usd >= 0


def test_a_stream_with_impossible_usage_records_the_estimate_and_a_note(setup, hostile_upstream):
    inst = hostile_instance(
        hostile_upstream,
        "usage-stream",
        Script(usage={"prompt_tokens": -3, "completion_tokens": "abc"}),
    )
    balancer = one_route(inst, "impossible-stream")
    chunks = list(
        setup.client().chat.completions.create(
            model="impossible-stream", messages=HELLO, stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    [event] = wait_for_events(1, balancer=balancer)
    assert (event.status_code, event.error_type) == (200, "")
    assert event.prompt_tokens > 0 and event.completion_tokens >= 0
    assert "completion_tokens is not a number" in event.usage_note


@pytest.mark.parametrize(
    ("script", "why"),
    [
        (
            Script(usage={"prompt_tokens": "abc", "completion_tokens": 7}),
            "usage.prompt_tokens is not a number",
        ),
        (Script(usage=[1, 2]), "usage is not an object"),
        (Script(body=b"<html>Bad gateway</html>"), "not JSON"),
        (Script(body=b"[1, 2, 3]"), "not an object"),
        (Script(body=b'{"id": "x", "object": "chat.completion"}'), "no 'choices' array"),
        (Script(body=b'{"error": {"message": "overloaded"}}'), "error object"),
    ],
)
def test_a_malformed_answer_fails_over_to_the_next_target(setup, hostile_upstream, script, why):
    tag = "".join(c for c in why if c.isalnum())[:20]
    bad = hostile_instance(hostile_upstream, f"malformed-{tag}", script)
    good = hostile_instance(hostile_upstream, f"sound-{tag}")
    balancer = two_routes(bad, good, f"malformed-fo-{tag}")
    raw = setup.client().chat.completions.with_raw_response.create(
        model=balancer.serving_name, messages=HELLO
    )
    assert raw.headers["x-balancer-instance"] == good.instance_id
    assert raw.parse().choices[0].message.content == "Hello from a hostile upstream."
    [event] = wait_for_events(1, balancer=balancer)
    assert event.status_code == 200
    assert [a["outcome"] for a in event.attempt_log] == ["malformed", "ok"]
    assert why in event.attempt_log[0]["detail"]
    assert (event.prompt_tokens, event.completion_tokens) == (11, 7)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_malformed_answer_with_no_next_target_is_an_openai_shaped_502(
    setup, hostile_upstream, provider
):
    inst = hostile_instance(
        hostile_upstream,
        f"abc-{provider}",
        Script(usage={"prompt_tokens": "abc", "completion_tokens": 1}),
        provider=provider,
    )
    balancer = one_route(inst, f"abc-only-{provider}")
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    response = httpx.post(
        setup.gateway.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": balancer.serving_name, "messages": HELLO},
        timeout=10,
    )
    assert response.status_code == 502
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "upstream_unavailable" and "malformed" in error["message"]
    [event] = wait_for_events(1, balancer=balancer)
    assert (event.status_code, event.error_type) == (502, "upstream_failed")
    assert event.attempt_log[0]["outcome"] == "malformed"


def test_a_malformed_answer_counts_against_the_instance_health(setup, hostile_upstream):
    bad = hostile_instance(hostile_upstream, "garbage", Script(usage={"prompt_tokens": "abc"}))
    good = hostile_instance(hostile_upstream, "fine")
    two_routes(bad, good, "garbage-health")
    client = setup.client()
    for _ in range(6):
        client.chat.completions.create(model="garbage-health", messages=HELLO)
    assert hostile_upstream.count("garbage") == 3  # three failures trip the circuit
    assert hostile_upstream.count("fine") == 6
