"""The model catalogue (targetgroups/catalogue.py): name matching, offline prices from genai-prices,
and an operator's value winning over every default, through the API, the form and the routing
snapshot."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.hotpath.snapshot import instance_spec
from targetgroups import catalogue
from targetgroups.catalogue import lookup
from targetgroups.models import Instance
from tests.factories import make_instance


@pytest.mark.parametrize(
    ("name", "entry", "provider"),
    [
        ("gpt-4o", "gpt-4o", "openai"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini", "openai"),
        ("openai/gpt-4o", "gpt-4o", "openai"),
        ("GPT-4.1", "gpt-4.1", "openai"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5", "anthropic"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku", "anthropic"),
        ("gemini-2.5-flash", "gemini-2.5-flash", "google"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite", "google"),
        ("mistral-large-latest", "mistral-large", "mistral"),
        ("codestral-2501", "codestral", "mistral"),
        ("deepseek-chat", "deepseek-chat", "deepseek"),
        ("grok-4-0709", "grok-4", "xai"),
        ("llama-3.3-70b-versatile", "llama-3.3-70b-versatile", "groq"),
        ("sonar-pro", "sonar-pro", "perplexity"),
        ("qwen2.5-coder:7b", "qwen2.5-coder", "open"),
        ("openai/gpt-oss-120b", "gpt-oss-120b", "open"),
    ],
)
def test_lookup_takes_the_longest_prefix_at_a_word_boundary(name, entry, provider):
    found = lookup(name)
    assert found is not None and found.name == entry and found.provider == provider


@pytest.mark.parametrize(
    "name", ["gpt-4oops", "o3x", "support-a", "sim-model-1", "", "llama-local"]
)
def test_a_name_the_catalogue_does_not_know_is_none(name):
    assert lookup(name) is None


def test_prices_come_from_genai_prices_bundled_data_with_no_fetch():
    import genai_prices
    from genai_prices import data_snapshot

    found = lookup("gpt-4o-mini")
    assert found is not None
    # genai-prices 0.2.3's bundled figures for gpt-4o-mini (USD per 1M tokens).
    assert found.input_price_per_million == Decimal("0.15")
    assert found.output_price_per_million == Decimal("0.6")
    assert found.cached_input_price_per_million == Decimal("0.075")
    assert found.context_window == 128_000 and found.max_output_tokens == 16_384
    assert found.supports_tools and found.supports_vision and found.supports_json_mode
    # Read from the wheel's snapshot: no auto-update snapshot was ever installed.
    assert data_snapshot._custom_snapshot is None
    assert genai_prices.__version__.startswith("0.2.")


def test_a_tiered_price_is_its_base_tier_and_an_open_model_has_no_list_price():
    sonnet = lookup("claude-sonnet-4-5")
    assert sonnet is not None and sonnet.input_price_per_million == Decimal("3")
    assert sonnet.supports_json_mode is False  # the Messages API takes no response_format
    oss = lookup("gpt-oss-120b")
    assert oss is not None and oss.input_price_per_million is None


def test_every_entry_is_well_formed():
    for name, entry in catalogue.MODELS.items():
        assert name == name.lower() and "/" not in name
        assert 1 <= entry.tier <= 5
        assert set(entry.strengths) <= set(catalogue.STRENGTHS), name


@pytest.mark.django_db
def test_the_snapshot_takes_the_operators_values_over_the_catalogues():
    default = make_instance(model="gpt-4o")
    spec = instance_spec(default)
    assert (spec.context_window, spec.supports_vision, spec.supports_tools) == (128_000, True, True)
    assert "code" in spec.strengths and spec.cached_input_price_per_million == 1.25
    told = make_instance(
        model="gpt-4o",
        context_window=32_000,
        supports_vision=False,
        strengths=["reasoning"],
        cached_input_price_per_million="0.5",
    )
    spec = instance_spec(told)
    assert (spec.context_window, spec.supports_vision, spec.supports_tools) == (32_000, False, True)
    assert spec.strengths == ("reasoning",) and spec.cached_input_price_per_million == 0.5
    unknown = instance_spec(make_instance(model="my-own-model"))
    assert (unknown.context_window, unknown.supports_vision, unknown.strengths) == (None, None, ())


def _payload(**fields: object) -> dict[str, object]:
    return {
        "instance_id": "inst_cat",
        "provider": "openai",
        "base_url": "https://api.openai.com/v1",
        "model": "gpt-4o-mini",
        **fields,
    }


@pytest.mark.django_db
def test_api_create_without_prices_takes_the_catalogues_and_given_values_win(admin_client):
    response = admin_client.post("/api/instances/", _payload(), content_type="application/json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["input_price_per_million"] == "0.150000"
    assert body["output_price_per_million"] == "0.600000"
    assert body["quality_tier"] == 3
    assert (
        body["context_window"] is None and body["supports_vision"] is None
    )  # follows the catalogue
    response = admin_client.post(
        "/api/instances/",
        _payload(
            instance_id="inst_told",
            input_price_per_million="1.000000",
            quality_tier=5,
            supports_vision=False,
            context_window=4096,
            strengths=["code"],
        ),
        content_type="application/json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["input_price_per_million"] == "1.000000" and body["quality_tier"] == 5
    assert body["output_price_per_million"] == "0.600000"  # not given: the catalogue's
    told = Instance.objects.get(instance_id="inst_told")
    caps = told.capabilities()
    assert (caps.supports_vision, caps.context_window, caps.strengths) == (False, 4096, ("code",))
    assert caps.source["supports_vision"] == "instance"
    assert caps.source["supports_tools"] == "catalogue"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("strengths", "code"),
        ("strengths", ["Code!"]),
        ("context_window", 0),
        ("supports_tools", "yes"),
    ],
)
def test_api_refuses_bad_capabilities_with_a_400_naming_the_field(admin_client, field, value):
    response = admin_client.post(
        "/api/instances/", _payload(**{field: value}), content_type="application/json"
    )
    assert response.status_code == 400
    assert field in response.json()  # the error names the field
    assert not Instance.objects.filter(instance_id="inst_cat").exists()


@pytest.mark.django_db
def test_the_instance_form_sets_and_clears_capabilities(admin_client):
    instance = make_instance(
        model="gpt-4o", provider="openai", base_url="https://api.openai.com/v1"
    )
    page = admin_client.get(f"/instances/{instance.instance_id}/")
    assert b"Catalogue entry" in page.content and b"128,000 tokens" in page.content
    form = {
        "instance_id": instance.instance_id,
        "display_name": "",
        "provider": "openai",
        "base_url": "https://api.openai.com/v1",
        "model": "gpt-4o",
        "workload_kind": "chat",
        "input_price_per_million": "",
        "output_price_per_million": "7",
        "quality_tier": "",
        "cached_input_price_per_million": "",
        "context_window": "64000",
        "max_output_tokens": "",
        "supports_tools": "unknown",
        "supports_vision": "false",
        "supports_json_mode": "unknown",
        "supports_streaming": "unknown",
        "strengths": "code, reasoning",
        "connect_timeout": "5",
        "first_byte_timeout": "60",
        "request_timeout": "300",
        "enabled": "on",
    }
    response = admin_client.post(f"/instances/{instance.instance_id}/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    instance.refresh_from_db()
    assert instance.context_window == 64000 and instance.supports_vision is False
    assert instance.supports_tools is None and instance.strengths == ["code", "reasoning"]
    assert instance.input_price_per_million == Decimal("2.5")  # empty: the catalogue's
    assert instance.output_price_per_million == Decimal("7")
    assert instance.quality_tier == 4  # empty: the catalogue's tier for gpt-4o
    page = admin_client.get(f"/instances/{instance.instance_id}/")
    assert b"64,000 tokens" in page.content
    form.update(strengths="none", context_window="", supports_vision="unknown")
    assert admin_client.post(f"/instances/{instance.instance_id}/", form).status_code == 302
    instance.refresh_from_db()
    assert instance.strengths == [] and instance.context_window is None
    assert instance.supports_vision is None
    bad = admin_client.post(f"/instances/{instance.instance_id}/", {**form, "strengths": "c0de!"})
    assert bad.status_code == 200 and b"is not a strength" in bad.content
