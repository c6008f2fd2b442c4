"""The LiteLLM SDK as a client: its OpenAI and Anthropic providers pointed only at the gateway's
base URL and a gateway key, in a real uvicorn process, against balancers served by the simulator,
an OpenAI-wire and an Anthropic-wire upstream, and failing over from one wire format to the other
in the middle of a tool loop."""

from __future__ import annotations

import json
import os

import pytest

# LiteLLM fetches its model price list from the internet at import unless told to use the copy
# it ships.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import litellm

from gateway.models import UsageEvent
from tests.factories import make_api_key
from tests.gateway.client_upstreams import KINDS, failing_over, served_by
from tests.gateway.test_openai_sdk import wait_for_events
from tests.upstream_server import Behaviour

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


def litellm_kwargs(setup, provider: str, serving_name: str) -> dict:
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    return {
        "model": f"{provider}/{serving_name}",
        "api_base": setup.gateway.v1 if provider == "openai" else setup.gateway.base_url,
        "api_key": secret,
        "max_tokens": 100,
        "num_retries": 0,
        "timeout": 20,
    }


def run_tool_loop(kwargs: dict, between=None) -> str:
    """A call of the weather tool, its result ("18C"), the final answer. `between` runs after
    the call, before its result is sent."""
    turns = [{"role": "user", "content": "Weather?"}]
    first = litellm.completion(messages=turns, tools=TOOLS, **kwargs)
    [call] = first.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "weather",
        {"city": "Paris"},
    )
    if between is not None:
        between()
    turns += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C"},
    ]
    return litellm.completion(messages=turns, tools=TOOLS, **kwargs).choices[0].message.content


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_litellm_completes_streams_and_runs_a_tool_loop(setup, provider, kind):
    balancer = served_by(setup, kind, f"ll-{provider}-{kind}")
    kwargs = litellm_kwargs(setup, provider, f"ll-{provider}-{kind}")
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
    assert run_tool_loop(kwargs) == "The weather tool returned: 18C."
    wait_for_events(4, balancer=balancer)
    expected = "chat" if provider == "openai" else "messages"
    assert set(UsageEvent.objects.filter(balancer=balancer).values_list("endpoint", flat=True)) == {
        expected
    }


def test_litellm_fails_over_mid_loop_from_an_openai_to_an_anthropic_upstream(setup):
    balancer, primary = failing_over(setup, "openai-wire", "anthropic-wire", "ll-mid-loop")
    kwargs = litellm_kwargs(setup, "openai", "ll-mid-loop")

    def broken() -> None:
        setup.upstream.behaviours[primary] = Behaviour(status=500)

    assert run_tool_loop(kwargs, between=broken) == "The weather tool returned: 18C."
    events = wait_for_events(2, balancer=balancer)
    assert [(e.endpoint, e.route, e.attempts, e.status_code) for e in events] == [
        ("chat", "primary", 1, 200),
        ("chat", "fallback", 2, 200),
    ]
    # The second turn went to both: the OpenAI-wire upstream (500), then the Anthropic one.
    assert setup.upstream.requests[-2]["messages"][-1]["role"] == "tool"
    assert setup.upstream.requests[-1]["messages"][-1]["content"][0]["type"] == "tool_result"
