"""Anthropic instances behind an OpenAI-compatible balancer: translated both ways."""

from __future__ import annotations

import json

import pytest

from gateway.upstream.anthropic import to_anthropic
from tests.factories import make_balancer, make_instance
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)


def anthropic_instance(setup, model: str, behaviour: Behaviour | None = None):
    if behaviour is not None:
        setup.upstream.behaviours[model] = behaviour
    return make_instance(
        provider="anthropic", base_url=setup.upstream.base_url, model=model, api_key="sk-ant-test"
    )


def test_a_chat_completion_is_answered_by_the_messages_api(setup):
    inst = anthropic_instance(setup, "claude-fake", Behaviour(content="Bonjour"))
    make_balancer(
        serving_name="claude",
        routes=[{"name": "m", "intent": "x", "instance": inst, "priority": 1, "is_default": True}],
    )
    client = setup.client()
    reply = client.chat.completions.create(
        model="claude",
        max_tokens=50,
        stop=["END"],
        temperature=0.1,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
    )
    assert reply.choices[0].message.content == "Bonjour"
    assert reply.model == "claude-fake" and reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (13, 5)
    sent = setup.upstream.requests[-1]
    assert sent["system"] == "Be brief." and sent["messages"] == [
        {"role": "user", "content": "Hello"}
    ]
    assert sent["max_tokens"] == 50 and sent["stop_sequences"] == ["END"]
    assert setup.upstream.auth_headers[-1] == "sk-ant-test"


def test_tools_are_translated_both_ways(setup):
    inst = anthropic_instance(setup, "claude-tools")
    make_balancer(
        serving_name="claude-tools",
        routes=[{"name": "m", "intent": "x", "instance": inst, "priority": 1, "is_default": True}],
    )
    reply = setup.client().chat.completions.create(
        model="claude-tools",
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[
            {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
        ],
        tool_choice="required",
    )
    call = reply.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "weather",
        {"city": "Paris"},
    )
    assert reply.choices[0].finish_reason == "tool_calls"
    sent = setup.upstream.requests[-1]
    assert sent["tools"][0]["input_schema"] == {"type": "object"} and sent["tool_choice"] == {
        "type": "any"
    }


def test_a_stream_is_translated_into_chunks_with_usage(setup):
    inst = anthropic_instance(setup, "claude-stream", Behaviour(content="one two"))
    make_balancer(
        serving_name="claude-stream",
        routes=[{"name": "m", "intent": "x", "instance": inst, "priority": 1, "is_default": True}],
    )
    chunks = list(
        setup.client().chat.completions.create(
            model="claude-stream",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two"
    assert chunks[-1].usage.completion_tokens == 5


def test_an_overloaded_anthropic_instance_fails_over(setup):
    busy = anthropic_instance(setup, "claude-busy", Behaviour(status=529))
    spare = setup.instance("openai-spare")
    setup.failover_balancer(busy, spare, serving_name="claude-fo")
    raw = setup.client().chat.completions.with_raw_response.create(
        model="claude-fo", messages=[{"role": "user", "content": "x"}]
    )
    assert raw.headers["x-balancer-instance"] == spare.instance_id


def test_tool_results_and_assistant_tool_calls_become_content_blocks():
    body = to_anthropic(
        {
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "Cold."},
            ]
        },
        "claude",
    )
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "c1", "name": "weather", "input": {"city": "Oslo"}}],
    }
    assert body["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "Cold."}],
    }
    assert body["max_tokens"] == 4096
