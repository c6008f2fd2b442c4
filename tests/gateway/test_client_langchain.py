"""LangChain's ChatOpenAI (chat completions and the Responses API) and ChatAnthropic (the Messages
API), pointed only at the gateway's base URL and a gateway key, in a real uvicorn process, against
balancers served by the simulator, an OpenAI-wire and an Anthropic-wire upstream, and failing over
from one wire format to the other in the middle of a tool loop."""

from __future__ import annotations

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from gateway.models import UsageEvent
from tests.factories import make_api_key
from tests.gateway.client_upstreams import KINDS, failing_over, served_by, tool_city
from tests.gateway.test_openai_sdk import wait_for_events
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"18C in {city}"


def run_tool_loop(model, city: str = "example city", between=None) -> str:
    """One tool call, its result, the final answer: LangChain's own message types all the way.
    `between` runs after the call, before its result is sent."""
    bound = model.bind_tools([weather])
    history = [HumanMessage("Weather in Paris?")]
    first = bound.invoke(history)
    [call] = first.tool_calls
    assert call["name"] == "weather" and call["args"] == {"city": city}
    if between is not None:
        between()
    history += [first, ToolMessage(weather.invoke(call["args"]), tool_call_id=call["id"])]
    return bound.invoke(history).text


def chat_openai(setup, serving_name: str, use_responses_api: bool = False) -> ChatOpenAI:
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    return ChatOpenAI(
        model=serving_name,
        base_url=setup.gateway.v1,
        api_key=secret,
        max_retries=0,
        timeout=20,
        use_responses_api=use_responses_api,
    )


def chat_anthropic(setup, serving_name: str) -> ChatAnthropic:
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    return ChatAnthropic(
        model=serving_name,
        base_url=setup.gateway.base_url,
        api_key=secret,
        max_retries=0,
        timeout=20,
        max_tokens=200,
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("use_responses_api", [False, True], ids=["chat-completions", "responses"])
def test_chat_openai_answers_streams_and_runs_a_tool_loop(setup, use_responses_api, kind):
    balancer = served_by(setup, kind, f"lc-openai-{kind}")
    model = chat_openai(setup, f"lc-openai-{kind}", use_responses_api)
    answer = model.invoke("Hello")
    assert answer.text and answer.usage_metadata["output_tokens"] > 0
    assert "".join(chunk.text for chunk in model.stream("Hello")) == answer.text
    city = tool_city(kind)
    assert run_tool_loop(model, city) == f"The weather tool returned: 18C in {city}."
    endpoint = "responses" if use_responses_api else "chat"
    events = wait_for_events(4, balancer=balancer)
    assert {e.endpoint for e in events} == {endpoint}


@pytest.mark.parametrize("kind", KINDS)
def test_chat_anthropic_answers_streams_and_runs_a_tool_loop(setup, kind):
    balancer = served_by(setup, kind, f"lc-claude-{kind}")
    model = chat_anthropic(setup, f"lc-claude-{kind}")
    answer = model.invoke("Hello")
    assert answer.text and answer.usage_metadata["output_tokens"] > 0
    assert "".join(chunk.text for chunk in model.stream("Hello")) == answer.text
    city = tool_city(kind)
    assert run_tool_loop(model, city) == f"The weather tool returned: 18C in {city}."
    wait_for_events(4, balancer=balancer)
    assert set(UsageEvent.objects.filter(balancer=balancer).values_list("endpoint", flat=True)) == {
        "messages"
    }


def test_chat_anthropic_fails_over_mid_loop_from_an_anthropic_to_an_openai_upstream(setup):
    balancer, primary = failing_over(setup, "anthropic-wire", "openai-wire", "lc-mid-loop")
    model = chat_anthropic(setup, "lc-mid-loop")

    def overloaded() -> None:
        setup.upstream.behaviours[primary] = Behaviour(status=529)

    final = run_tool_loop(model, "Paris", between=overloaded)
    assert final == "The weather tool returned: 18C in Paris."
    events = wait_for_events(2, balancer=balancer)
    assert [(e.endpoint, e.route, e.attempts, e.status_code) for e in events] == [
        ("messages", "primary", 1, 200),
        ("messages", "fallback", 2, 200),
    ]
    # The second turn went to both: the Anthropic upstream (529), then the OpenAI-wire one.
    assert setup.upstream.requests[-1]["messages"][-1]["role"] == "tool"
    assert setup.upstream.requests[-2]["messages"][-1]["content"][0]["type"] == "tool_result"
