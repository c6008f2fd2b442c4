"""The gateway in a real uvicorn process, called with the official openai SDK."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from gateway.models import UsageEvent
from tests.factories import make_balancer, make_instance
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for_events(count: int, timeout: float = 5.0, **filters: object) -> list[UsageEvent]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = list(UsageEvent.objects.filter(**filters).order_by("created_at"))
        if len(events) >= count:
            return events
        time.sleep(0.05)
    raise AssertionError(
        f"expected {count} usage events, found {UsageEvent.objects.filter(**filters).count()}"
    )


def test_chat_completion_answers_with_the_model_that_served_and_routing_headers(setup):
    inst = setup.instance("upstream-a", Behaviour(content="Hi there"))
    balancer = make_balancer(
        serving_name="support",
        routes=[
            {"name": "main", "intent": "All.", "instance": inst, "priority": 1, "is_default": True}
        ],
    )
    client = setup.client()
    raw = client.chat.completions.with_raw_response.create(
        model="support",
        messages=[{"role": "user", "content": "Hello"}],
        temperature=0.2,
        seed=7,
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hi there"
    assert completion.model == "upstream-a"
    assert raw.headers["x-balancer"] == "support"
    assert raw.headers["x-balancer-route"] == "main"
    assert raw.headers["x-balancer-instance"] == inst.instance_id
    assert raw.headers["x-balancer-attempts"] == "1"
    assert raw.headers["x-balancer-decision"] == "ordered"
    assert raw.headers["x-request-id"]
    assert (
        int(raw.headers["content-length"]) == len(raw.content)
        and "transfer-encoding" not in raw.headers
    )
    sent = setup.upstream.requests[-1]
    assert sent["model"] == "upstream-a"
    assert (
        sent["seed"] == 7
        and sent["temperature"] == 0.2
        and sent["tools"][0]["function"]["name"] == "f"
    )
    assert setup.upstream.auth_headers[-1] == "Bearer upstream-secret-upstream-a"
    [event] = wait_for_events(1, balancer=balancer)
    assert (event.route, event.instance, event.status_code) == ("main", inst.instance_id, 200)
    assert (event.prompt_tokens, event.completion_tokens) == (11, 7)
    # 11 * 0.50 / 1M + 7 * 1.50 / 1M
    assert float(event.cost_usd) == pytest.approx((11 * 0.5 + 7 * 1.5) / 1e6)


def test_streaming_chat_relays_chunks_and_usage_when_asked(setup):
    inst = setup.instance("upstream-s", Behaviour(content="one two three", chunks=3))
    make_balancer(
        serving_name="streamer",
        routes=[
            {"name": "main", "intent": "All.", "instance": inst, "priority": 1, "is_default": True}
        ],
    )
    client = setup.client()
    chunks = list(
        client.chat.completions.create(
            model="streamer",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7


def test_streaming_without_include_usage_hides_the_usage_chunk_but_records_cost(setup):
    inst = setup.instance("upstream-s2", Behaviour(content="a b", chunks=2))
    balancer = make_balancer(
        serving_name="streamer2",
        routes=[
            {"name": "main", "intent": "All.", "instance": inst, "priority": 1, "is_default": True}
        ],
    )
    client = setup.client()
    chunks = list(
        client.chat.completions.create(
            model="streamer2", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    assert all(c.choices for c in chunks)
    assert setup.upstream.requests[-1]["stream_options"] == {"include_usage": True}
    [event] = wait_for_events(1, balancer=balancer)
    assert event.stream and (event.prompt_tokens, event.completion_tokens) == (11, 7)


def test_embeddings_and_models_list(setup):
    emb = setup.instance("embed-up", workload_kind="embeddings")
    chat = setup.instance("chat-up")
    make_balancer(
        serving_name="vectors",
        workload_kind="embeddings",
        routes=[
            {"name": "main", "intent": "All.", "instance": emb, "priority": 1, "is_default": True}
        ],
    )
    make_balancer(
        serving_name="talk",
        routes=[
            {"name": "main", "intent": "All.", "instance": chat, "priority": 1, "is_default": True}
        ],
    )
    client = setup.client()
    result = client.embeddings.create(model="vectors", input=["a", "b"])
    assert [d.index for d in result.data] == [0, 1]
    ids = {m.id for m in client.models.list()}
    assert {"vectors", "talk"} <= ids
    assert client.models.retrieve("talk").id == "talk"


def test_models_list_shows_only_the_balancers_a_key_may_use(setup):
    a = make_balancer(
        serving_name="allowed-one",
        routes=[
            {
                "name": "m",
                "intent": "x",
                "instance": setup.instance("u1"),
                "priority": 1,
                "is_default": True,
            }
        ],
    )
    make_balancer(
        serving_name="hidden-one",
        routes=[
            {
                "name": "m",
                "intent": "x",
                "instance": setup.instance("u2"),
                "priority": 1,
                "is_default": True,
            }
        ],
    )
    client = setup.client(balancers=[a])
    # The goal names (auto, auto-cheap...) this key reaches through allowed-one are listed too; not
    # auto-free
    # (allowed-one's instance is priced).
    assert [m.id for m in client.models.list()] == [
        "allowed-one",
        "auto",
        "auto-best",
        "auto-cheap",
        "auto-code",
        "auto-fast",
    ]
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(
            model="hidden-one", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.PermissionDeniedError):
        client.models.retrieve("hidden-one")


def test_sdk_exceptions_for_client_errors(setup):
    inst = setup.instance("u-err")
    make_balancer(
        serving_name="errs",
        routes=[{"name": "m", "intent": "x", "instance": inst, "priority": 1, "is_default": True}],
    )
    make_balancer(
        serving_name="errs-embed",
        workload_kind="embeddings",
        routes=[
            {
                "name": "m",
                "intent": "x",
                "instance": setup.instance("u-emb", workload_kind="embeddings"),
                "priority": 1,
                "is_default": True,
            }
        ],
    )
    client = setup.client(rate_limit_per_minute=3)
    from tests.gateway.test_shared_state import wait_clear_of_minute_boundary

    wait_clear_of_minute_boundary(10)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="errs", messages=[])
    assert bad.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as wrong_kind:
        client.chat.completions.create(
            model="errs-embed", messages=[{"role": "user", "content": "x"}]
        )
    assert wrong_kind.value.code == "wrong_workload_kind"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.APIStatusError) as too_big:
        client.chat.completions.create(
            model="errs", messages=[{"role": "user", "content": "x" * 300_000}]
        )
    assert too_big.value.status_code == 413
    bad_key = openai.OpenAI(base_url=setup.gateway.v1, api_key="sb-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.chat.completions.create(model="errs", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError) as limited:
        for _ in range(5):
            client.chat.completions.create(
                model="errs", messages=[{"role": "user", "content": "x"}]
            )
    assert int(limited.value.response.headers["retry-after"]) >= 1


def test_malformed_json_is_a_400_in_openai_shape(setup):
    setup.instance("u-json")
    client = setup.client()
    response = httpx.post(
        setup.gateway.v1 + "/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {client.api_key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    missing = httpx.post(
        setup.gateway.v1 + "/chat/completions", json={"model": "x", "messages": [{"role": "user"}]}
    )
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"


def test_a_change_in_the_database_reaches_the_gateway_within_a_second(setup):
    inst = setup.instance("u-live")
    client = setup.client()
    started = time.monotonic()
    make_balancer(
        serving_name="brand-new",
        routes=[{"name": "m", "intent": "x", "instance": inst, "priority": 1, "is_default": True}],
    )
    while True:
        try:
            client.chat.completions.create(
                model="brand-new", messages=[{"role": "user", "content": "x"}]
            )
            break
        except openai.NotFoundError:
            assert time.monotonic() - started < 1.0
            time.sleep(0.02)


def test_a_revoked_key_stops_working(setup):
    from gateway.models import ApiKey
    from gateway.services import api_key_revoke

    inst = setup.instance("u-revoke")
    make_balancer(
        serving_name="rev",
        routes=[{"name": "m", "intent": "x", "instance": inst, "priority": 1, "is_default": True}],
    )
    client = setup.client()
    client.chat.completions.create(model="rev", messages=[{"role": "user", "content": "x"}])
    api_key_revoke(key=ApiKey.objects.get())
    setup.gateway.wait_for_config()
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="rev", messages=[{"role": "user", "content": "x"}])


def test_simulator_instances_answer_offline(setup):
    sim = make_instance(provider="simulator", model="sim-1", options={"latency_ms": 5})
    make_balancer(
        serving_name="sim",
        routes=[{"name": "m", "intent": "x", "instance": sim, "priority": 1, "is_default": True}],
    )
    client = setup.client()
    first = client.chat.completions.create(
        model="sim", messages=[{"role": "user", "content": "Same prompt"}]
    )
    second = client.chat.completions.create(
        model="sim", messages=[{"role": "user", "content": "Same prompt"}]
    )
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.model == "sim-1" and first.usage.completion_tokens > 0
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="sim", messages=[{"role": "user", "content": "Same prompt"}], stream=True
        )
        if c.choices
    )
    assert streamed == first.choices[0].message.content


def test_an_sse_client_accept_header_is_not_refused(setup):
    inst = setup.instance("u-sse", Behaviour(content="a b", chunks=2))
    make_balancer(
        serving_name="sse",
        routes=[{"name": "m", "intent": "x", "instance": inst, "priority": 1, "is_default": True}],
    )
    client = setup.client()
    with httpx.stream(
        "POST",
        setup.gateway.v1 + "/chat/completions",
        json={"model": "sse", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {client.api_key}", "Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert b"[DONE]" in response.read()
