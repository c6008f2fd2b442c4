"""The LiteLLM SDK as a client: its OpenAI and Anthropic providers pointed only at the gateway's base
URL and a gateway key, in a real uvicorn process."""

from __future__ import annotations

import json
import os

import pytest

# LiteLLM fetches its model price list from the internet at import unless told to use the copy it ships.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import litellm

from gateway.models import UsageEvent
from tests.factories import make_api_key, make_balancer, make_instance
from tests.gateway.test_openai_sdk import wait_for_events

pytestmark = pytest.mark.django_db(transaction=True)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "enum": ["Paris"]}},
            },
        },
    }
]


def simulated(serving_name: str) -> object:
    sim = make_instance(provider="simulator", model=f"sim-{serving_name}", options={})
    return make_balancer(
        serving_name=serving_name,
        routes=[
            {"name": "main", "intent": "All.", "instance": sim, "priority": 1, "is_default": True}
        ],
    )


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_litellm_completes_streams_and_runs_a_tool_loop(setup, provider):
    balancer = simulated(f"ll-{provider}")
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    base = setup.gateway.v1 if provider == "openai" else setup.gateway.base_url
    kwargs = {
        "model": f"{provider}/ll-{provider}",
        "api_base": base,
        "api_key": secret,
        "max_tokens": 100,
        "num_retries": 0,
        "timeout": 20,
    }
    answer = litellm.completion(messages=[{"role": "user", "content": "Hello"}], **kwargs)
    text = answer.choices[0].message.content
    assert text and answer.usage.completion_tokens > 0
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in litellm.completion(
            messages=[{"role": "user", "content": "Hello"}], stream=True, **kwargs
        )
        if c.choices
    )
    assert streamed == text
    turns = [{"role": "user", "content": "Weather?"}]
    first = litellm.completion(messages=turns, tools=TOOLS, **kwargs)
    [call] = first.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "weather",
        {"city": "Paris"},
    )
    turns += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C"},
    ]
    final = litellm.completion(messages=turns, tools=TOOLS, **kwargs)
    assert final.choices[0].message.content == "The weather tool returned: 18C."
    wait_for_events(4, balancer=balancer)
    expected = "chat" if provider == "openai" else "messages"
    assert set(UsageEvent.objects.filter(balancer=balancer).values_list("endpoint", flat=True)) == {
        expected
    }
