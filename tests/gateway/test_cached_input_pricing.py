"""Cached input tokens are billed at the cached-input price: OpenAI's
`usage.prompt_tokens_details.cached_tokens` and Anthropic's `cache_read_input_tokens`, read from
loopback servers speaking each provider's wire (tests/provider_server.py), on whole answers and
streams; an operator's own cached price wins over the catalogue's; without one, cached tokens
cost the input price."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from gateway.hotpath.proxy import _cost
from gateway.hotpath.snapshot import instance_spec
from gateway.models import UsageEvent
from gateway.upstream.answers import read_usage
from targetgroups.catalogue import lookup
from targetgroups.models import Instance, ProviderCredential
from tests.factories import make_balancer, make_instance
from tests.provider_server import ProviderServer

TEN_PLACES = Decimal("0.0000000001")  # UsageEvent.cost_usd's precision


def exact(value: Decimal) -> Decimal:
    return value.quantize(TEN_PLACES)


def cost(fresh: int, cached: int, completion: int, price_in, price_cached, price_out) -> Decimal:
    """USD for a prompt of `fresh` + `cached` tokens and `completion` tokens, prices per 1M."""
    return exact(
        (
            fresh * Decimal(str(price_in))
            + cached * Decimal(str(price_cached))
            + completion * Decimal(str(price_out))
        )
        / 1_000_000
    )


def events(count: int, timeout: float = 20.0, **filters: object) -> list[UsageEvent]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(UsageEvent.objects.filter(**filters).order_by("created_at"))
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"expected {count} usage events for {filters}")


# -- reading the counts ---------------------------------------------------------------------------


def test_the_cached_part_of_the_prompt_is_read_from_openais_usage() -> None:
    usage = {
        "prompt_tokens": 2000,
        "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 1500},
    }
    assert read_usage(usage, limit=10**7).cached == 1500
    assert read_usage({"prompt_tokens": 20, "completion_tokens": 4}, limit=10**7).cached == 0


def test_a_cached_count_over_the_prompt_is_dropped_and_said() -> None:
    reported = read_usage(
        {
            "prompt_tokens": 10,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 11},
        },
        limit=10**7,
    )
    assert reported.cached == 0 and reported.prompt == 10
    assert "cached_tokens 11 is over prompt_tokens 10" in reported.note


def test_cached_tokens_cost_the_input_price_when_no_cached_price_is_known() -> None:
    spec = instance_spec(
        Instance(
            pk=1,
            instance_id="house",
            provider="openai",
            base_url="http://127.0.0.1:9",
            model="house-model",
            input_price_per_million=Decimal(2),
            output_price_per_million=Decimal(8),
        )
    )
    assert spec.cached_input_price_per_million is None
    assert _cost(spec, 1000, 10, cached=600) == _cost(spec, 1000, 10)


# -- through the gateway --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def providers() -> Iterator[dict[str, ProviderServer]]:
    started = {code: ProviderServer(code).start() for code in ("openai", "anthropic")}
    yield started
    for server in started.values():
        server.stop()


def store(server: ProviderServer) -> None:
    credential = ProviderCredential(provider=server.provider, base_url=server.base_url)
    credential.api_key = server.key
    credential.full_clean()
    credential.save()


@pytest.mark.django_db(transaction=True)
def test_direct_calls_bill_cached_input_at_the_catalogues_cached_price(setup, providers) -> None:
    """gpt-4o: $2.50 in, $1.25 cached, $10 out; claude-sonnet-4-5: $3 in, $0.30 cached read, $15
    out (genai-prices). 2,000 prompt tokens of which 1,500 cached, 4 out, on each wire."""
    for server in providers.values():
        store(server)
    client = setup.client(allow_direct_models=True)
    hi = [{"role": "user", "content": "Hi"}]
    for model in ("gpt-4o-cached", "claude-sonnet-4-5-cached"):
        reply = client.chat.completions.create(model=model, messages=hi)
        assert reply.usage is not None and reply.usage.prompt_tokens == 2000
        assert reply.usage.prompt_tokens_details is not None
        assert reply.usage.prompt_tokens_details.cached_tokens == 1500
        stream = client.chat.completions.create(
            model=model, messages=hi, stream=True, stream_options={"include_usage": True}
        )
        last = [chunk for chunk in stream][-1]
        assert last.usage is not None and last.usage.prompt_tokens == 2000

    gpt, claude = lookup("gpt-4o"), lookup("claude-sonnet-4-5")
    assert gpt is not None and claude is not None
    assert (gpt.input_price_per_million, gpt.cached_input_price_per_million) == (
        Decimal("2.5"),
        Decimal("1.25"),
    )
    assert (claude.input_price_per_million, claude.cached_input_price_per_million) == (
        Decimal("3"),
        Decimal("0.3"),
    )
    for model, entry in (("gpt-4o-cached", gpt), ("claude-sonnet-4-5-cached", claude)):
        expected = cost(
            500,
            1500,
            4,
            entry.input_price_per_million,
            entry.cached_input_price_per_million,
            entry.output_price_per_million,
        )
        found = events(2, serving_name=model)
        assert [(e.stream, e.prompt_tokens, e.completion_tokens) for e in found] == [
            (False, 2000, 4),
            (True, 2000, 4),
        ]
        assert [exact(e.cost_usd) for e in found] == [expected, expected], model
    # The figures themselves: 500 x $2.50 + 1,500 x $1.25 + 4 x $10, per million tokens.
    assert cost(500, 1500, 4, 2.5, 1.25, 10) == Decimal("0.0031650000")
    assert cost(500, 1500, 4, 3, 0.3, 15) == Decimal("0.0020100000")


@pytest.mark.django_db(transaction=True)
def test_an_operators_cached_price_wins_and_none_bills_the_input_price(setup, providers) -> None:
    server = providers["openai"]
    own = make_instance(
        provider="openai",
        base_url=server.base_url,
        model="gpt-4o-cached",
        api_key=server.key,
        input_price_per_million="2",
        output_price_per_million="8",
        cached_input_price_per_million="0.5",
    )
    unpriced = make_instance(
        provider="openai",
        base_url=server.base_url,
        model="house-model-cached",  # not in the catalogue: no cached price anywhere
        api_key=server.key,
        input_price_per_million="2",
        output_price_per_million="8",
    )
    make_balancer(
        serving_name="own-cached",
        routes=[
            {"name": "main", "intent": "All.", "instance": own, "priority": 1, "is_default": True}
        ],
    )
    make_balancer(
        serving_name="unpriced-cached",
        routes=[
            {
                "name": "main",
                "intent": "All.",
                "instance": unpriced,
                "priority": 1,
                "is_default": True,
            }
        ],
    )
    client = setup.client()
    hi = [{"role": "user", "content": "Hi"}]
    client.chat.completions.create(model="own-cached", messages=hi)
    client.chat.completions.create(model="unpriced-cached", messages=hi)
    (mine,) = events(1, serving_name="own-cached")
    (plain,) = events(1, serving_name="unpriced-cached")
    assert exact(mine.cost_usd) == cost(500, 1500, 4, 2, 0.5, 8) == Decimal("0.0017820000")
    assert exact(plain.cost_usd) == cost(2000, 0, 4, 2, 0, 8) == Decimal("0.0040320000")


@pytest.mark.django_db(transaction=True)
def test_the_messages_door_says_and_bills_the_cached_part_in_anthropics_terms(
    setup, providers
) -> None:
    """/v1/messages: to Anthropic the answer passes as Anthropic sent it; from an OpenAI-shaped
    upstream the cached part comes back as `cache_read_input_tokens`, the rest as `input_tokens`.
    Both billed at the cached price."""
    import httpx

    for server in providers.values():
        store(server)
    client = setup.client(allow_direct_models=True)
    usages = {}
    for model in ("claude-sonnet-4-5-cached", "gpt-4o-cached"):
        answer = httpx.post(
            setup.gateway.v1 + "/messages",
            headers={"x-api-key": client.api_key, "anthropic-version": "2023-06-01"},
            json={
                "model": model,
                "max_tokens": 20,
                "messages": [{"role": "user", "content": "Hi"}],
            },
            timeout=20,
        )
        assert answer.status_code == 200, answer.text
        usages[model] = answer.json()["usage"]
    assert usages["claude-sonnet-4-5-cached"]["cache_read_input_tokens"] == 1500
    assert usages["claude-sonnet-4-5-cached"]["input_tokens"] == 500
    assert usages["gpt-4o-cached"] == {
        "input_tokens": 500,
        "cache_read_input_tokens": 1500,
        "output_tokens": 4,
    }
    (claude,) = events(1, serving_name="claude-sonnet-4-5-cached")
    (gpt,) = events(1, serving_name="gpt-4o-cached")
    assert (claude.endpoint, claude.prompt_tokens) == ("messages", 2000)
    assert exact(claude.cost_usd) == Decimal("0.0020100000")
    assert exact(gpt.cost_usd) == Decimal("0.0031650000")


@pytest.mark.django_db(transaction=True)
def test_the_responses_door_says_the_cached_part(setup, providers) -> None:
    store(providers["openai"])
    client = setup.client(allow_direct_models=True)
    whole = client.responses.create(model="gpt-4o-cached", input="Hi")
    assert whole.usage is not None and whole.usage.input_tokens == 2000
    assert whole.usage.input_tokens_details.cached_tokens == 1500
    streamed = client.responses.create(model="gpt-4o-cached", input="Hi", stream=True)
    completed = [event for event in streamed if event.type == "response.completed"]
    done = completed[-1]
    assert done.response.usage is not None
    assert done.response.usage.input_tokens_details.cached_tokens == 1500
    found = events(2, serving_name="gpt-4o-cached")
    assert [exact(e.cost_usd) for e in found] == [Decimal("0.0031650000")] * 2
