"""The response cache in the real gateway process, against the test Redis and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings

from tests.factories import make_api_key, make_balancer
from tests.fault_servers import own_redis
from tests.gateway.test_openai_sdk import wait_for_events
from tests.live_server import LiveGateway
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "What is the capital city of France?"}]


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter("sb:cache:*"):
        client.delete(key)
    yield


def cached_balancer(
    setup: Any, model: str, behaviour: Behaviour | None = None, **fields: Any
) -> Any:
    inst = setup.instance(model, behaviour or Behaviour(content=f"Paris, says {model}."))
    return make_balancer(
        serving_name=model,
        routes=[
            {"name": "main", "intent": "All.", "instance": inst, "priority": 1, "is_default": True}
        ],
        **{"cache_mode": "exact", **fields},
    )


def post(setup: Any, secret: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(
        setup.gateway.v1 + "/chat/completions",
        json=body,
        timeout=10,
        headers={"Authorization": f"Bearer {secret}", **headers},
    )


def cache_keys(balancer: Any) -> list[bytes]:
    return list(redis.Redis.from_url(settings.REDIS_URL).scan_iter(f"sb:cache:{balancer.pk}:*"))


def wait_for_cache_keys(balancer: Any, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(cache_keys(balancer)) < count:
        time.sleep(0.02)
    assert len(cache_keys(balancer)) >= count


def test_an_identical_request_is_answered_from_the_cache_at_zero_cost_with_the_savings_recorded(
    setup,
):
    balancer = cached_balancer(setup, "cache-exact")
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    body = {"model": "cache-exact", "messages": HELLO, "temperature": 0}
    first = post(setup, secret, body)
    second = post(setup, secret, {**body, "user": "someone", "metadata": {"trace": "x"}})
    assert (first.status_code, second.status_code) == (200, 200)
    assert (
        first.headers["x-balancer-cache"] == "miss" and second.headers["x-balancer-cache"] == "hit"
    )
    assert second.json() == first.json()
    assert (
        second.headers["x-balancer-route"] == "main"
        and second.headers["x-balancer-attempts"] == "0"
    )
    assert setup.upstream.count("cache-exact") == 1
    miss, hit = wait_for_events(2, balancer=balancer)
    assert (miss.cache_hit, hit.cache_hit) == (False, True)
    assert hit.cost_usd == 0 and miss.cost_usd > 0
    assert hit.savings_usd == miss.cost_usd == Decimal(str((11 * 0.5 + 7 * 1.5) / 1e6))
    assert (hit.prompt_tokens, hit.completion_tokens, hit.decision_reason) == (11, 7, "cache_hit")


def test_a_parameter_that_changes_the_answer_is_a_miss(setup):
    cached_balancer(setup, "cache-params")
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    body = {"model": "cache-params", "messages": HELLO, "temperature": 0}
    post(setup, secret, body)
    other = post(setup, secret, {**body, "temperature": 0.7})
    longer = post(
        setup, secret, {**body, "messages": [*HELLO, {"role": "user", "content": "And Spain?"}]}
    )
    assert other.headers["x-balancer-cache"] == longer.headers["x-balancer-cache"] == "miss"
    assert setup.upstream.count("cache-params") == 3


def test_an_answer_expires_with_the_balancers_ttl(setup):
    cached_balancer(setup, "cache-ttl", cache_ttl_seconds=1)
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    body = {"model": "cache-ttl", "messages": HELLO}
    post(setup, secret, body)
    assert post(setup, secret, body).headers["x-balancer-cache"] == "hit"
    time.sleep(1.3)
    assert post(setup, secret, body).headers["x-balancer-cache"] == "miss"
    assert setup.upstream.count("cache-ttl") == 2


def test_a_streamed_answer_is_cached_and_replayed_as_a_stream_to_the_openai_sdk(setup):
    balancer = cached_balancer(
        setup, "cache-stream", Behaviour(content="one two three four", chunks=4)
    )
    client = setup.client()
    first = list(client.chat.completions.create(model="cache-stream", messages=HELLO, stream=True))
    wait_for_cache_keys(balancer, 1)  # a stream is stored when it ends, off the client's path
    raw = client.chat.completions.with_raw_response.create(
        model="cache-stream", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-balancer-cache"] == "hit"
    assert raw.headers["content-type"].startswith("text/event-stream")
    replayed = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in replayed if c.choices)
    assert (
        text
        == "".join(c.choices[0].delta.content or "" for c in first if c.choices)
        == "one two three four"
    )
    assert [c.choices[0].finish_reason for c in replayed if c.choices][-1] == "stop"
    assert replayed[-1].usage is not None and replayed[-1].usage.completion_tokens == 7
    # The same answer serves a plain request too.
    plain = client.chat.completions.with_raw_response.create(model="cache-stream", messages=HELLO)
    assert plain.headers["x-balancer-cache"] == "hit"
    assert plain.parse().choices[0].message.content == "one two three four"
    assert setup.upstream.count("cache-stream") == 1
    events = wait_for_events(3, balancer=balancer)
    assert [e.cache_hit for e in events] == [False, True, True]
    assert events[1].stream and not events[2].stream


def test_a_stream_cut_short_is_not_cached(setup):
    balancer = cached_balancer(
        setup, "cache-broken", Behaviour(content="a b c d", chunks=4, break_after_chunks=2)
    )
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    body = {"model": "cache-broken", "messages": HELLO, "stream": True}
    with httpx.stream(
        "POST",
        setup.gateway.v1 + "/chat/completions",
        json=body,
        timeout=10,
        headers={"Authorization": f"Bearer {secret}"},
    ) as response:
        assert b"error" in response.read()
    wait_for_events(1, balancer=balancer)
    time.sleep(0.2)
    assert cache_keys(balancer) == []
    assert post(setup, secret, {**body, "stream": False}).headers["x-balancer-cache"] == "miss"


def test_an_error_answer_is_not_cached(setup):
    cached_balancer(setup, "cache-error", Behaviour(status=400))
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    body = {"model": "cache-error", "messages": HELLO}
    assert post(setup, secret, body).status_code == 400
    assert post(setup, secret, body).status_code == 400
    assert setup.upstream.count("cache-error") == 2


def test_one_keys_answers_are_not_served_to_another_key_unless_the_balancer_shares_them(setup):
    cached_balancer(setup, "cache-keys")
    cached_balancer(setup, "cache-shared", cache_shared_across_keys=True)
    _, alice = make_api_key()
    _, bob = make_api_key()
    setup.gateway.wait_for_config()
    for model in ("cache-keys", "cache-shared"):
        body = {"model": model, "messages": HELLO}
        assert post(setup, alice, body).headers["x-balancer-cache"] == "miss"
        assert post(setup, alice, body).headers["x-balancer-cache"] == "hit"
    assert (
        post(setup, bob, {"model": "cache-keys", "messages": HELLO}).headers["x-balancer-cache"]
        == "miss"
    )
    assert (
        post(setup, bob, {"model": "cache-shared", "messages": HELLO}).headers["x-balancer-cache"]
        == "hit"
    )
    assert (setup.upstream.count("cache-keys"), setup.upstream.count("cache-shared")) == (2, 1)


def test_cache_control_no_cache_bypasses_the_look_up_and_no_store_the_store(setup):
    balancer = cached_balancer(setup, "cache-bypass")
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    body = {"model": "cache-bypass", "messages": HELLO}
    assert (
        post(setup, secret, body, **{"Cache-Control": "no-store"}).headers["x-balancer-cache"]
        == "bypass"
    )
    assert cache_keys(balancer) == []
    assert post(setup, secret, body).headers["x-balancer-cache"] == "miss"
    assert (
        post(setup, secret, body, **{"Cache-Control": "no-cache"}).headers["x-balancer-cache"]
        == "bypass"
    )
    assert post(setup, secret, body).headers["x-balancer-cache"] == "hit"
    assert setup.upstream.count("cache-bypass") == 3


def test_a_balancer_without_the_cache_answers_every_request_upstream_unmarked(setup):
    cached_balancer(setup, "cache-off", cache_mode="off")
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    body = {"model": "cache-off", "messages": HELLO}
    responses = [post(setup, secret, body) for _ in range(2)]
    assert all("x-balancer-cache" not in r.headers for r in responses)
    assert setup.upstream.count("cache-off") == 2


def test_a_similar_prompt_is_a_hit_above_the_threshold_and_a_miss_below_it(setup):
    # Similarities with the static embeddings: "What is the capital of France?" 0.92,
    # "... capital city of Germany?" 0.62 (measured; the thresholds sit between).
    cached_balancer(setup, "cache-semantic", cache_mode="semantic", cache_similarity_threshold=0.9)
    cached_balancer(setup, "cache-strict", cache_mode="semantic", cache_similarity_threshold=0.95)
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    near = [{"role": "user", "content": "What is the capital of France?"}]
    far = [{"role": "user", "content": "What is the capital city of Germany?"}]
    for model in ("cache-semantic", "cache-strict"):
        assert (
            post(setup, secret, {"model": model, "messages": HELLO}).headers["x-balancer-cache"]
            == "miss"
        )
    hit = post(setup, secret, {"model": "cache-semantic", "messages": near})
    assert hit.headers["x-balancer-cache"] == "hit"
    assert 0.9 <= float(hit.headers["x-balancer-cache-similarity"]) < 0.95
    assert hit.json()["choices"][0]["message"]["content"] == "Paris, says cache-semantic."
    assert (
        post(setup, secret, {"model": "cache-semantic", "messages": far}).headers[
            "x-balancer-cache"
        ]
        == "miss"
    )
    assert (
        post(setup, secret, {"model": "cache-strict", "messages": near}).headers["x-balancer-cache"]
        == "miss"
    )
    # Parameters must still match exactly.
    other = post(setup, secret, {"model": "cache-semantic", "messages": near, "temperature": 1})
    assert other.headers["x-balancer-cache"] == "miss"
    assert (setup.upstream.count("cache-semantic"), setup.upstream.count("cache-strict")) == (3, 2)


def test_with_redis_down_the_cache_is_never_an_error_and_serves_what_this_process_holds(setup):
    inst = setup.instance("cache-redis-down", Behaviour(content="Paris."))
    make_balancer(
        serving_name="cache-redis-down",
        cache_mode="exact",
        routes=[
            {"name": "main", "intent": "All.", "instance": inst, "priority": 1, "is_default": True}
        ],
    )
    _, secret = make_api_key()
    with own_redis() as server:
        gateway = LiveGateway(
            extra_env={"REDIS_URL": server.url, "GATEWAY_REDIS_RETRY_SECONDS": "1"}
        )
        try:
            gateway.wait_for_config()
            body = {"model": "cache-redis-down", "messages": HELLO}
            headers = {"Authorization": f"Bearer {secret}"}
            url = gateway.v1 + "/chat/completions"

            def cache_header(payload: dict[str, Any]) -> str:
                response = httpx.post(url, json=payload, headers=headers, timeout=10)
                assert response.status_code == 200
                return response.headers["x-balancer-cache"]

            assert cache_header(body) == "miss"
            assert cache_header(body) == "hit"
            server.kill()
            # The answer this process holds is still served, until its TTL.
            assert [cache_header(body) for _ in range(3)] == ["hit"] * 3
            # A new prompt is a miss, never an error, and is kept in this process only.
            other = {"model": "cache-redis-down", "messages": [{"role": "user", "content": "Hi"}]}
            assert cache_header(other) == "miss"
            assert cache_header(other) == "hit"
            stream = httpx.post(url, json={**other, "stream": True}, headers=headers, timeout=10)
            assert stream.status_code == 200 and stream.headers["x-balancer-cache"] == "hit"
            assert setup.upstream.count("cache-redis-down") == 2
            log = gateway.log()
            assert "Traceback" not in log
            assert log.count("Redis unavailable for the response cache:") == 1
        finally:
            gateway.stop()
    events = wait_for_events(8, serving_name="cache-redis-down")
    assert [e.cache_hit for e in events] == [False, True, True, True, True, False, True, True]


def test_the_translated_doors_skip_the_cache(setup):
    cached_balancer(setup, "cache-doors")
    _, secret = make_api_key()
    setup.gateway.wait_for_config()
    body = {
        "model": "cache-doors",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    for _ in range(2):
        response = httpx.post(
            setup.gateway.v1 + "/messages",
            json=body,
            timeout=10,
            headers={"x-api-key": secret, "anthropic-version": "2023-06-01"},
        )
        assert response.status_code == 200, response.text
        assert "x-balancer-cache" not in response.headers
    assert setup.upstream.count("cache-doors") == 2
