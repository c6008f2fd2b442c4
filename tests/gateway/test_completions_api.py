"""POST /v1/completions (legacy text completions) in a real uvicorn process, called with the
official openai SDK."""

from __future__ import annotations

import openai
import pytest

from tests.factories import make_balancer
from tests.gateway.test_openai_sdk import wait_for_events
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)


def one_route(serving_name: str, instance) -> object:
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
    )


def test_a_prompt_is_routed_as_one_user_message_and_answered_as_a_text_completion(setup):
    balancer = one_route("legacy", setup.instance("oa-legacy", Behaviour(content="world")))
    completion = setup.client().completions.create(
        model="legacy", prompt="Hello", max_tokens=5, stop=["\n"], echo=True
    )
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert (
        completion.choices[0].text == "Helloworld" and completion.choices[0].finish_reason == "stop"
    )
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (11, 7)
    sent = setup.upstream.requests[-1]
    assert (
        sent["messages"] == [{"role": "user", "content": "Hello"}]
        and sent["max_tokens"] == 5
        and sent["stop"] == ["\n"]
    )
    [event] = wait_for_events(1, balancer=balancer)
    assert (event.endpoint, event.status_code, event.prompt_tokens) == ("completions", 200, 11)


def test_a_streamed_completion_sends_text_completion_chunks(setup):
    balancer = one_route(
        "legacy-stream", setup.instance("oa-legacy-s", Behaviour(content="a b c", chunks=3))
    )
    chunks = list(
        setup.client().completions.create(
            model="legacy-stream", prompt="x", stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "a b c"
    assert chunks[-1].usage.completion_tokens == 7
    [event] = wait_for_events(1, balancer=balancer)
    assert event.endpoint == "completions" and event.stream


def test_what_a_chat_route_cannot_honour_is_a_400(setup):
    one_route("legacy-strict", setup.instance("oa-legacy-x"))
    client = setup.client()
    with pytest.raises(openai.BadRequestError) as many:
        client.completions.create(model="legacy-strict", prompt=["a", "b"])
    assert many.value.param == "prompt"
    with pytest.raises(openai.BadRequestError) as suffix:
        client.completions.create(model="legacy-strict", prompt="a", suffix="z")
    assert suffix.value.param == "suffix"
