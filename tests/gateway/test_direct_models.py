"""Providers by model name: detection, the key's flag, and direct calls through the gateway with
the official openai SDK against loopback servers speaking each provider's wire."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest

from gateway.hotpath.direct import direct_pk
from gateway.hotpath.redis_client import redis_sync
from gateway.hotpath.runtime import HEALTH_KEY
from gateway.models import UsageEvent
from targetgroups.models import ProviderCredential
from targetgroups.providers import PROVIDERS, detect
from tests.provider_server import CONTENT, ProviderServer

DETECTED = [
    ("gpt-4o", "openai", "gpt-4o"),
    ("gpt-4.1-mini", "openai", "gpt-4.1-mini"),
    ("o3-mini", "openai", "o3-mini"),
    ("text-embedding-3-small", "openai", "text-embedding-3-small"),
    ("claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
    ("claude-3-5-haiku-latest", "anthropic", "claude-3-5-haiku-latest"),
    ("gemini-2.5-flash", "google", "gemini-2.5-flash"),
    ("text-embedding-004", "google", "text-embedding-004"),  # the longest prefix wins
    ("mistral-large-latest", "mistral", "mistral-large-latest"),
    ("codestral-latest", "mistral", "codestral-latest"),
    ("deepseek-chat", "deepseek", "deepseek-chat"),
    ("grok-4", "xai", "grok-4"),
    ("sonar-pro", "perplexity", "sonar-pro"),
    # Hosts of other vendors' models: explicit only.
    ("groq/llama-3.3-70b-versatile", "groq", "llama-3.3-70b-versatile"),
    ("openrouter/openai/gpt-4o", "openrouter", "openai/gpt-4o"),
    (
        "together/meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "together",
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    ),
    (
        "fireworks/accounts/fireworks/models/llama-v3p1-8b-instruct",
        "fireworks",
        "accounts/fireworks/models/llama-v3p1-8b-instruct",
    ),
    ("azure/my-gpt4o-deployment", "azure", "my-gpt4o-deployment"),
    ("ollama/llama3.2", "ollama", "llama3.2"),
    ("custom/qwen2.5-7b-instruct", "custom", "qwen2.5-7b-instruct"),
    # Explicit beats the prefix: OpenAI's model at Azure, Anthropic's through OpenRouter.
    ("azure/gpt-4o", "azure", "gpt-4o"),
    ("openrouter/anthropic/claude-sonnet-4-5", "openrouter", "anthropic/claude-sonnet-4-5"),
]


@pytest.mark.parametrize(("name", "provider", "model"), DETECTED)
def test_a_model_name_means_its_provider(name, provider, model) -> None:
    found = detect(name)
    assert found is not None and (found.provider, found.model) == (provider, model)


def test_every_provider_is_detected_by_some_name() -> None:
    assert {provider for _, provider, _ in DETECTED} == set(PROVIDERS)


@pytest.mark.parametrize(
    "name", ["llama-3.1-8b", "support", "meta-llama/Llama-3", "nobody/gpt-4o", "groq/", "auto"]
)
def test_a_name_of_no_provider_is_not_detected(name) -> None:
    found = detect(name)
    # "nobody/gpt-4o": not a provider prefix, so the whole name is read by its prefix rules.
    assert found is None


def test_the_implicit_instance_pk_is_negative_and_stable() -> None:
    pk = direct_pk("anthropic", "claude-sonnet-4-5")
    assert pk < 0 and pk == direct_pk("anthropic", "claude-sonnet-4-5")
    assert pk != direct_pk("openrouter", "claude-sonnet-4-5")


# -- through the gateway ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def providers() -> Iterator[dict[str, ProviderServer]]:
    started = {code: ProviderServer(code).start() for code in ("anthropic", "google", "groq")}
    yield started
    for server in started.values():
        server.stop()


def store(server: ProviderServer) -> ProviderCredential:
    credential = ProviderCredential(provider=server.provider, base_url=server.base_url)
    credential.api_key = server.key
    credential.full_clean()
    credential.save()
    return credential


def events(count: int, timeout: float = 5.0, **filters: object) -> list[UsageEvent]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(UsageEvent.objects.filter(**filters).order_by("created_at"))
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"expected {count} usage events for {filters}")


@pytest.mark.django_db(transaction=True)
def test_a_key_allowed_to_calls_each_provider_by_its_models_name(setup, providers) -> None:
    for server in providers.values():
        store(server)
    client = setup.client(allow_direct_models=True)
    hi = [{"role": "user", "content": "Hi"}]

    raw = client.chat.completions.with_raw_response.create(model="claude-sonnet-4-5", messages=hi)
    reply = raw.parse()
    assert reply.choices[0].message.content == CONTENT and reply.model == "claude-sonnet-4-5"
    assert raw.headers["x-balancer-decision"] == "direct:anthropic"
    assert raw.headers["x-balancer-instance"] == "anthropic:claude-sonnet-4-5"
    seen = providers["anthropic"].seen[-1]
    assert seen.path == "/v1/messages" and seen.headers["x-api-key"] == providers["anthropic"].key

    reply = client.chat.completions.create(model="gemini-2.5-flash", messages=hi)
    assert reply.choices[0].message.content == CONTENT
    seen = providers["google"].seen[-1]
    assert seen.path == "/v1beta/openai/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {providers['google'].key}"

    stream = client.chat.completions.create(
        model="groq/llama-3.3-70b-versatile", messages=hi, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.split() == CONTENT.split()
    assert providers["groq"].seen[-1].body["model"] == "llama-3.3-70b-versatile"

    claude = events(1, serving_name="claude-sonnet-4-5")[0]
    assert (claude.instance, claude.model, claude.route) == (
        "anthropic:claude-sonnet-4-5",
        "claude-sonnet-4-5",
        "direct",
    )
    assert (claude.prompt_tokens, claude.completion_tokens, claude.status_code) == (9, 4, 200)
    assert claude.decision_reason == "direct:anthropic" and claude.balancer_id is None
    # Priced from the model catalogue (genai-prices): $3 in, $15 out per 1M tokens.
    from targetgroups.catalogue import lookup

    prices = lookup("claude-sonnet-4-5")
    assert prices is not None and prices.input_price_per_million
    expected = (
        9 * prices.input_price_per_million + 4 * (prices.output_price_per_million or 0)
    ) / 1_000_000
    assert claude.cost_usd == pytest.approx(expected) and claude.cost_usd > 0
    groq = events(1, serving_name="groq/llama-3.3-70b-versatile")[0]
    assert groq.stream and groq.completion_tokens == 4


@pytest.mark.django_db(transaction=True)
def test_models_list_offers_a_credentialed_providers_models_to_a_key_allowed_to_call_them(
    setup, providers
) -> None:
    store(providers["anthropic"])
    store(providers["google"])
    allowed = setup.client(allow_direct_models=True)
    listed = {m.id: m for m in allowed.models.list()}
    assert listed["claude-sonnet-4-5"].owned_by == "anthropic"
    assert listed["gemini-2.5-flash"].owned_by == "google"
    assert listed["claude-sonnet-4-5"].model_extra["routing_mode"] == "direct"
    # No credential, no listing: OpenAI's and xAI's models are not offered.
    assert "gpt-4o" not in listed and "grok-4" not in listed
    # An open-weight model that "gpt-" would send to OpenAI is not an Anthropic or Google model.
    assert not any(m.owned_by == "openai" for m in listed.values())
    one = allowed.models.retrieve("claude-sonnet-4-5")
    assert (one.id, one.owned_by) == ("claude-sonnet-4-5", "anthropic")
    explicit = allowed.models.retrieve("anthropic/claude-opus-4-1")
    assert explicit.owned_by == "anthropic"
    # Every listed direct model is one the key can call (the detail answers for each).
    direct = [m.id for m in listed.values() if m.model_extra["routing_mode"] == "direct"]
    assert direct and all(allowed.models.retrieve(name).id == name for name in direct)

    plain = setup.client()
    assert "claude-sonnet-4-5" not in {m.id for m in plain.models.list()}
    with pytest.raises(openai.PermissionDeniedError):
        plain.models.retrieve("claude-sonnet-4-5")


@pytest.mark.django_db(transaction=True)
def test_a_key_without_the_flag_is_refused_naming_the_reason(setup, providers) -> None:
    store(providers["anthropic"])
    client = setup.client()
    before = len(providers["anthropic"].seen)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "Hi"}]
        )
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "direct_models_not_allowed"
    assert "may not call models by name" in error["message"] and error["param"] == "model"
    assert len(providers["anthropic"].seen) == before  # nothing reached the provider


@pytest.mark.django_db(transaction=True)
def test_a_provider_without_a_credential_and_an_unknown_name_are_404s(setup) -> None:
    client = setup.client(allow_direct_models=True)
    hi = [{"role": "user", "content": "Hi"}]
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="grok-4", messages=hi)
    assert missing.value.body["code"] == "provider_not_configured"
    assert "xAI" in missing.value.body["message"]
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="llama-3.1-8b", messages=hi)
    assert unknown.value.body["code"] == "model_not_found"


def shared_health(pk: int, timeout: float = 5.0) -> dict[str, Any] | None:
    """The health state every gateway process shares for this pk (Redis), once written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = redis_sync().hget(HEALTH_KEY, str(pk))
        if raw is not None:
            state: dict[str, Any] = orjson.loads(raw)
            return state
        time.sleep(0.05)
    return None


@pytest.mark.django_db(transaction=True)
def test_a_rate_limited_provider_model_cools_down_like_an_instance(setup, providers) -> None:
    """Anthropic's 429 says when its window resets (anthropic-ratelimit-requests-reset): the
    model's cooldown lasts that long, shared with every gateway process under the model's own
    pk; another model of the same provider is another target."""
    server = providers["anthropic"]
    store(server)
    client = setup.client(allow_direct_models=True)
    hi = [{"role": "user", "content": "Hi"}]
    with pytest.raises(openai.APIStatusError) as first:
        client.chat.completions.create(model="anthropic/rate-limited", messages=hi)
    assert first.value.status_code == 502
    state = shared_health(direct_pk("anthropic", "rate-limited"))
    assert state is not None and state["status"] == "cooling"
    assert 25 <= state["cooldown_until"] - time.time() <= 31
    assert client.chat.completions.create(model="claude-opus-4-1", messages=hi).choices
    other = redis_sync().hget(HEALTH_KEY, str(direct_pk("anthropic", "claude-opus-4-1")))
    assert other is None or orjson.loads(other)["status"] == "healthy"
    failed = events(1, serving_name="anthropic/rate-limited")[0]
    assert failed.attempt_log[0]["outcome"] == "status" and failed.attempt_log[0]["status"] == 429
    assert failed.instance == "" and failed.error_type == "upstream_failed"


@pytest.mark.django_db(transaction=True)
def test_a_provider_that_serves_no_embeddings_says_so(setup, providers) -> None:
    store(providers["anthropic"])
    client = setup.client(allow_direct_models=True)
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="claude-sonnet-4-5", input="x")
    assert refused.value.body["code"] == "wrong_workload_kind"


def test_the_providers_doc_lists_every_provider_of_the_table() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "providers.md").read_text()
    for code, facts in PROVIDERS.items():
        assert f"| `{code}` |" in doc, code
        if facts.base_url:
            assert f"`{facts.base_url}`" in doc, code
        for prefix in facts.prefixes:
            assert f"`{prefix}`" in doc, (code, prefix)


# -- an ordered `models` list of providers' model names ----------------------------------------


def _ask(client: openai.OpenAI, way: str, model: str, extra: dict[str, Any]) -> tuple[str, str]:
    """One chat call the way the SDK makes it; the model that served and the text."""
    hi = [{"role": "user", "content": "Hi"}]
    if way == "sync":
        reply = client.chat.completions.create(model=model, messages=hi, extra_body=extra)
        return reply.model, reply.choices[0].message.content or ""
    if way == "stream":
        chunks = list(
            client.chat.completions.create(model=model, messages=hi, extra_body=extra, stream=True)
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return chunks[-1].model, text

    async def call() -> tuple[str, str]:
        async with openai.AsyncOpenAI(
            base_url=str(client.base_url), api_key=client.api_key, max_retries=0, timeout=20
        ) as aclient:
            reply = await aclient.chat.completions.create(
                model=model, messages=hi, extra_body=extra
            )
        return reply.model, reply.choices[0].message.content or ""

    import asyncio

    return asyncio.run(call())


def _no_routing_fields_upstream(*servers: ProviderServer) -> None:
    for server in servers:
        for seen in server.seen:
            assert isinstance(seen.body, dict)
            assert "models" not in seen.body and "model_routing_config" not in seen.body


@pytest.mark.parametrize("way", ["sync", "async", "stream"])
@pytest.mark.parametrize("door", ["auto", "direct"])
@pytest.mark.django_db(transaction=True)
def test_a_models_list_of_provider_names_fails_over_in_order(setup, providers, way, door) -> None:
    """The issue's example: an ordered list of providers' model names, on `auto` and on a model
    named directly. Anthropic answers 529 (overloaded), so Gemini serves: two attempts, in the
    list's order, and neither provider is sent the gateway's own fields."""
    store(providers["anthropic"])
    store(providers["google"])
    claude = f"claude-sonnet-4-5-{door}-{way}"  # its own cooldown: one per test
    providers["anthropic"].overloaded.add(claude)
    for server in providers.values():
        server.seen.clear()
    client = setup.client(allow_direct_models=True)
    served, text = _ask(
        client, way, door if door == "auto" else claude, {"models": [claude, "gemini-2.5-flash"]}
    )
    assert served == "gemini-2.5-flash" and text.split() == CONTENT.split()
    event = events(1, serving_name=door if door == "auto" else claude)[0]
    log = event.attempt_log
    assert [(a["instance"], a["outcome"]) for a in log] == [
        (f"anthropic:{claude}", "status"),
        ("google:gemini-2.5-flash", "ok"),
    ]
    assert log[0]["status"] == 529
    assert (event.instance, event.route, event.status_code) == (
        "google:gemini-2.5-flash",
        "direct",
        200,
    )
    assert event.cost_usd > 0  # priced per attempt from the catalogue, as a single direct call
    assert [s.body["model"] for s in providers["anthropic"].seen] == [claude]
    assert [s.body["model"] for s in providers["google"].seen] == ["gemini-2.5-flash"]
    _no_routing_fields_upstream(*providers.values())


@pytest.mark.django_db(transaction=True)
def test_the_issues_example_list_and_a_pool_of_provider_names_on_auto(setup, providers) -> None:
    """`models: ["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash"]` with all three providers
    stored: tried in that order (OpenAI and Anthropic overloaded); `model_routing_config.models`
    takes the same names as a pool."""
    openai_server = ProviderServer("openai").start()
    try:
        for server in (openai_server, providers["anthropic"], providers["google"]):
            store(server)
            server.seen.clear()
        openai_server.overloaded.add("gpt-4o")
        providers["anthropic"].overloaded.add("claude-sonnet-4-5")
        client = setup.client(allow_direct_models=True)
        raw = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": "Hi"}],
            extra_body={"models": ["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash"]},
        )
        assert raw.parse().model == "gemini-2.5-flash"
        assert raw.headers["x-balancer-attempts"] == "3"
        log = events(1, serving_name="auto")[0].attempt_log
        assert [a["instance"] for a in log] == [
            "openai:gpt-4o",
            "anthropic:claude-sonnet-4-5",
            "google:gemini-2.5-flash",
        ]
        reply = client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Hi"}],
            extra_body={"model_routing_config": {"models": ["google/gemini-2.5-flash"]}},
        )
        assert reply.model == "gemini-2.5-flash"
        _no_routing_fields_upstream(openai_server, providers["anthropic"], providers["google"])
    finally:
        openai_server.stop()
        providers["anthropic"].overloaded.discard("claude-sonnet-4-5")


@pytest.mark.django_db(transaction=True)
def test_a_models_list_of_provider_names_needs_the_keys_flag(setup, providers) -> None:
    store(providers["google"])
    providers["google"].seen.clear()
    client = setup.client()
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Hi"}],
            extra_body={"models": ["gemini-2.5-flash"]},
        )
    assert refused.value.body["code"] == "model_not_allowed"
    assert refused.value.body["param"] == "models[0]"
    assert providers["google"].seen == []
