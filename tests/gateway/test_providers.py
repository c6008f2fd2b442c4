"""Every provider against a loopback server speaking its wire (tests/provider_server.py): paths,
auth headers, answers, streams, error bodies and statuses, rate-limit headers, free probes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import orjson
import pytest

from gateway.engine.types import InstanceSpec
from gateway.probes import probe_instance
from gateway.upstream import UpstreamFailure, UpstreamStream, call_upstream
from gateway.upstream.answers import event_data
from targetgroups.providers import AZURE_API_VERSION, PROVIDERS
from tests.provider_server import CONTENT, ProviderServer

CODES = list(PROVIDERS)
KEYED = [code for code in CODES if PROVIDERS[code].key_required]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, ProviderServer]]:
    started = {code: ProviderServer(code).start() for code in CODES}
    yield started
    for server in started.values():
        server.stop()


def spec(server: ProviderServer, model: str = "a-model", key: str | None = None) -> InstanceSpec:
    return InstanceSpec(
        pk=-7,
        instance_id=f"{server.provider}:{model}",
        display_name=model,
        provider=server.provider,
        base_url=server.base_url,
        model=model,
        api_key=server.key if key is None else key,
        workload_kind="chat",
        input_price_per_million=0.0,
        output_price_per_million=0.0,
        quality_tier=3,
        connect_timeout=2.0,
        first_byte_timeout=5.0,
        request_timeout=10.0,
        enabled=True,
        options=MappingProxyType({}),
    )


def call(
    instance: InstanceSpec, *, stream: bool = False, endpoint: str = "chat", **payload: Any
) -> Any:
    body = {
        **(
            {"input": ["a", "b"]}
            if endpoint == "embeddings"
            else {"messages": [{"role": "user", "content": "Hi"}]}
        ),
        **payload,
    }

    async def run() -> Any:
        result = await call_upstream(
            instance,
            endpoint=endpoint,
            payload={**body, "model": instance.model, "stream": stream}
            if endpoint == "chat"
            else {**body, "model": instance.model},
            stream=stream,
            deadline=time.monotonic() + 10,
        )
        if isinstance(result, UpstreamStream):
            events = [result.first]
            async for event in result.rest:
                events.append(event)
            await result.aclose()
            return events
        return result

    return asyncio.run(run())


def failure(instance: InstanceSpec, **kwargs: Any) -> UpstreamFailure:
    with pytest.raises(UpstreamFailure) as caught:
        call(instance, **kwargs)
    return caught.value


def expected_path(server: ProviderServer, model: str, endpoint: str = "chat") -> str:
    tail = "/chat/completions" if endpoint == "chat" else "/embeddings"
    if server.provider == "azure":
        return f"/openai/deployments/{model}{tail}"
    if server.provider == "anthropic":
        return server.prefix + "/messages"
    return server.prefix + tail


def assert_auth(server: ProviderServer, headers: dict[str, str]) -> None:
    auth = PROVIDERS[server.provider].auth
    if auth == "bearer":
        assert headers["authorization"] == f"Bearer {server.key}"
    elif auth == "x-api-key":
        assert headers["x-api-key"] == server.key and headers["anthropic-version"]
        assert "authorization" not in headers
    else:
        assert headers["api-key"] == server.key and "authorization" not in headers


@pytest.mark.parametrize("code", CODES)
def test_each_provider_answers_on_its_own_path_with_its_own_auth(servers, code) -> None:
    server = servers[code]
    result = call(spec(server, "model-x"))
    answer = orjson.loads(result.body)
    assert answer["choices"][0]["message"]["content"] == CONTENT
    assert answer["usage"]["prompt_tokens"] == 9 and answer["usage"]["completion_tokens"] == 4
    seen = server.seen[-1]
    assert (seen.method, seen.path) == ("POST", expected_path(server, "model-x"))
    assert_auth(server, seen.headers)
    if code == "azure":
        assert seen.query == {"api-version": AZURE_API_VERSION}
    if code == "anthropic":
        assert seen.body["messages"] == [{"role": "user", "content": "Hi"}]  # translated


@pytest.mark.parametrize("code", CODES)
def test_each_provider_streams_chunks_to_the_end(servers, code) -> None:
    server = servers[code]
    events = call(spec(server, "model-s"), stream=True, stream_options={"include_usage": True})
    first = orjson.loads(event_data(events[0]) or b"")  # keep-alive comments are not the first
    assert first["object"] == "chat.completion.chunk"
    chunks = [event_data(e) for e in events]
    assert chunks[-1] == b"[DONE]"
    text = "".join(
        (c["choices"][0]["delta"].get("content") or "")
        for c in (orjson.loads(d) for d in chunks if d and d != b"[DONE]")
        if c.get("choices")
    )
    assert text.split() == CONTENT.split()
    usage = [orjson.loads(d)["usage"] for d in chunks if d and b'"usage":{' in d]
    assert usage and usage[-1]["completion_tokens"] == 4
    assert server.seen[-1].path == expected_path(server, "model-s")


@pytest.mark.parametrize("code", [c for c in CODES if PROVIDERS[c].embeddings])
def test_embeddings_where_the_provider_serves_them(servers, code) -> None:
    server = servers[code]
    result = call(spec(server, "embed-x"), endpoint="embeddings")
    assert len(orjson.loads(result.body)["data"]) == 2
    assert server.seen[-1].path == expected_path(server, "embed-x", "embeddings")


@pytest.mark.parametrize("code", KEYED)
def test_a_refused_key_is_a_retryable_401_in_openai_shape(servers, code) -> None:
    server = servers[code]
    refused = failure(spec(server, key="sk-wrong"))
    assert refused.status == 401 and refused.retryable
    error = orjson.loads(refused.body or b"")["error"]
    assert isinstance(error["message"], str) and error["message"]
    if code == "google":  # Google says 400 INVALID_ARGUMENT with reason API_KEY_INVALID
        assert refused.detail == "HTTP 400 (read as 401)"
        assert "API key not valid" in error["message"]


EXPECTED_WAIT = {"openai": (20, 20), "azure": (1.5, 1.5), "anthropic": (28, 31)}
EXPECTED_WAIT["openrouter"] = (10, 12.5)


@pytest.mark.parametrize("code", CODES)
def test_a_429_cools_down_for_as_long_as_the_providers_headers_say(servers, code) -> None:
    limited = failure(spec(servers[code], "rate-limited"))
    assert limited.status == 429 and limited.retryable
    low, high = EXPECTED_WAIT.get(code, (7, 7))
    assert limited.retry_after is not None and low <= limited.retry_after <= high, (
        limited.retry_after
    )


@pytest.mark.parametrize("code", CODES)
def test_a_bad_request_is_the_clients_error_in_openai_shape(servers, code) -> None:
    refused = failure(spec(servers[code], "bad-request"))
    assert not refused.retryable
    assert refused.status == (422 if code == "mistral" else 400)
    error = orjson.loads(refused.body or b"")["error"]
    word = "max_tokens" if code == "anthropic" else "temperature"
    assert word in error["message"]


@pytest.mark.parametrize("code", CODES)
def test_payment_required_moves_on_only_where_it_means_this_key_cannot_pay(servers, code) -> None:
    refused = failure(spec(servers[code], "no-credit"))
    assert refused.status == 402
    assert refused.retryable is (code in ("deepseek", "openrouter"))


@pytest.mark.parametrize("code", CODES)
def test_an_overloaded_provider_is_retryable(servers, code) -> None:
    refused = failure(spec(servers[code], "overloaded"))
    assert refused.status == (529 if code == "anthropic" else 503) and refused.retryable


@pytest.mark.parametrize("code", CODES)
def test_each_provider_has_a_probe_that_is_never_a_completion(servers, code) -> None:
    server = servers[code]
    before = len(server.seen)
    result = asyncio.run(probe_instance(spec(server)))
    assert result.status == "healthy", result.detail
    seen = server.seen[before:]
    assert len(seen) == 1
    facts = PROVIDERS[code]
    path = facts.probe_path if code == "azure" else server.prefix + facts.probe_path
    assert (seen[0].method, seen[0].path) == (facts.probe_method, path)
    assert_auth(server, seen[0].headers)
    if facts.probe_method == "POST":  # refused before any generation: nothing to bill
        assert seen[0].body == {"model": "", "messages": []}


@pytest.mark.parametrize("code", KEYED)
def test_a_probe_with_a_refused_key_says_unavailable(servers, code) -> None:
    result = asyncio.run(probe_instance(spec(servers[code], key="sk-wrong")))
    # Google's refusal is a 400 with reason API_KEY_INVALID, read as the 401 it means.
    assert result.status == "unavailable" and "credential refused" in result.detail


def test_azure_takes_the_api_version_of_the_instance(servers) -> None:
    server = servers["azure"]
    instance = spec(server, "my-deployment")
    instance = InstanceSpec(
        **{
            **{name: getattr(instance, name) for name in InstanceSpec.__dataclass_fields__},
            "options": MappingProxyType({"api_version": "2025-04-01-preview"}),
        }
    )
    call(instance)
    assert server.seen[-1].query == {"api-version": "2025-04-01-preview"}
    assert server.seen[-1].path == "/openai/deployments/my-deployment/chat/completions"
