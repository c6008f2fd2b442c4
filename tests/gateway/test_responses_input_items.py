"""GET /v1/responses/{id}/input_items through the official openai SDK: OpenAI's list shape and
its pagination (`limit`, `order`, `after`, `before`), scoped to the key that made the response."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.gateway.test_responses_api import one_route
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)

CONVERSATION = [
    {"type": "message", "role": "developer", "content": "Answer in French."},
    {"type": "message", "role": "user", "content": "What is the weather in Paris?"},
    {
        "type": "function_call",
        "id": "fc_given",
        "call_id": "call_1",
        "name": "weather",
        "arguments": '{"city": "Paris"}',
    },
    {"type": "function_call_output", "call_id": "call_1", "output": '{"temp": 21}'},
    {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "And in Celsius?"}],
    },
]


def test_the_input_items_are_listed_newest_first_and_paged(setup):
    one_route("listed", setup.instance("oa-listed", Behaviour(content="Il fait 21 degrés.")))
    client = setup.client()
    made = client.responses.create(model="listed", input=CONVERSATION)

    page = client.responses.input_items.list(made.id)  # OpenAI's default: desc, 20
    kinds = [(item.type, getattr(item, "role", None)) for item in page.data]
    assert kinds == [
        ("message", "user"),
        ("function_call_output", None),
        ("function_call", None),
        ("message", "user"),
        ("message", "developer"),
    ]
    assert page.data[2].id == "fc_given" and page.data[2].arguments == '{"city": "Paris"}'
    assert page.data[1].call_id == "call_1" and page.data[1].output == '{"temp": 21}'
    assert page.data[4].content[0].text == "Answer in French."
    assert all(item.status == "completed" and item.id for item in page.data)
    assert page.has_more is False
    ids = [item.id for item in page.data]
    assert len(set(ids)) == 5

    ascending = client.responses.input_items.list(made.id, order="asc", limit=2)
    assert [item.id for item in ascending.data] == ids[::-1][:2]
    assert ascending.has_more is True
    following = client.responses.input_items.list(
        made.id, order="asc", limit=2, after=ascending.data[-1].id
    )
    assert [item.id for item in following.data] == ids[::-1][2:4]
    # The SDK's auto-pagination walks every page with `after`.
    walked = [item.id for item in client.responses.input_items.list(made.id, limit=2)]
    assert walked == ids

    raw = httpx.get(
        f"{setup.gateway.v1}/responses/{made.id}/input_items",
        params={"limit": 2, "order": "asc", "before": ids[0]},
        headers={"Authorization": f"Bearer {client.api_key}"},
    ).json()
    assert raw["object"] == "list" and [i["id"] for i in raw["data"]] == ids[::-1][2:4]
    assert (raw["first_id"], raw["last_id"]) == (ids[2], ids[1])


def test_a_string_input_is_one_user_message(setup):
    one_route("listed-text", setup.instance("oa-listed-text", Behaviour(content="Yes.")))
    client = setup.client()
    made = client.responses.create(model="listed-text", input="Is it on?")
    [item] = client.responses.input_items.list(made.id).data
    assert (item.type, item.role, item.content[0].type, item.content[0].text) == (
        "message",
        "user",
        "input_text",
        "Is it on?",
    )


def test_bad_paging_is_a_400_naming_the_parameter_and_other_keys_get_a_404(setup):
    one_route("listed-bad", setup.instance("oa-listed-bad", Behaviour(content="Ok.")))
    client, other = setup.client(), setup.client()
    made = client.responses.create(model="listed-bad", input="hello")
    for params, param in (
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"after": "msg_nope"}, "after"),
    ):
        with pytest.raises(openai.BadRequestError) as bad:
            client.responses.input_items.list(made.id, **params)
        assert bad.value.body["param"] == param
    with pytest.raises(openai.NotFoundError):
        other.responses.input_items.list(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list("resp_unknown")
    unstored = client.responses.create(model="listed-bad", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(unstored.id)
