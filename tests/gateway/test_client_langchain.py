"""LangChain's ChatOpenAI (chat completions and the Responses API) and ChatAnthropic (the Messages
API), pointed only at the gateway's base URL and a gateway key, in a real uvicorn process."""

from __future__ import annotations

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from gateway.models import UsageEvent
from tests.factories import make_api_key, make_balancer, make_instance
from tests.gateway.test_openai_sdk import wait_for_events

pytestmark = pytest.mark.django_db(transaction=True)


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"18C in {city}"


def simulated(serving_name: str) -> object:
    sim = make_instance(provider="simulator", model=f"sim-{serving_name}", options={})
    return make_balancer(
        serving_name=serving_name,
        routes=[
            {"name": "main", "intent": "All.", "instance": sim, "priority": 1, "is_default": True}
        ],
    )


def run_tool_loop(model) -> str:
    """One tool call, its result, the final answer: LangChain's own message types all the way."""
    bound = model.bind_tools([weather])
    history = [HumanMessage("Weather in Paris?")]
    first = bound.invoke(history)
    [call] = first.tool_calls
    assert call["name"] == "weather" and call["args"] == {"city": "example city"}
    history += [first, ToolMessage(weather.invoke(call["args"]), tool_call_id=call["id"])]
    return bound.invoke(history).text


@pytest.mark.parametrize("use_responses_api", [False, True], ids=["chat-completions", "responses"])
def test_chat_openai_answers_streams_and_runs_a_tool_loop(setup, use_responses_api):
    balancer = simulated("lc-openai")
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    model = ChatOpenAI(
        model="lc-openai",
        base_url=setup.gateway.v1,
        api_key=secret,
        max_retries=0,
        timeout=20,
        use_responses_api=use_responses_api,
    )
    answer = model.invoke("Hello")
    assert answer.text and answer.usage_metadata["output_tokens"] > 0
    assert "".join(chunk.text for chunk in model.stream("Hello")) == answer.text
    assert run_tool_loop(model) == "The weather tool returned: 18C in example city."
    endpoint = "responses" if use_responses_api else "chat"
    events = wait_for_events(4, balancer=balancer)
    assert {e.endpoint for e in events} == {endpoint}


def test_chat_anthropic_answers_streams_and_runs_a_tool_loop(setup):
    balancer = simulated("lc-claude")
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    model = ChatAnthropic(
        model="lc-claude",
        base_url=setup.gateway.base_url,
        api_key=secret,
        max_retries=0,
        timeout=20,
        max_tokens=200,
    )
    answer = model.invoke("Hello")
    assert answer.text and answer.usage_metadata["output_tokens"] > 0
    assert "".join(chunk.text for chunk in model.stream("Hello")) == answer.text
    assert run_tool_loop(model) == "The weather tool returned: 18C in example city."
    wait_for_events(4, balancer=balancer)
    assert set(UsageEvent.objects.filter(balancer=balancer).values_list("endpoint", flat=True)) == {
        "messages"
    }
