"""Provider credentials in the management API: write-only keys, the facts, the free check."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from targetgroups.models import ProviderCredential
from targetgroups.providers import PROVIDERS
from tests.provider_server import ProviderServer

pytestmark = pytest.mark.django_db

SECRET = "sk-ant-very-secret-0123456789"


def test_every_provider_is_listed_with_its_facts(admin_client) -> None:
    body = admin_client.get("/api/providers/").json()
    assert [p["provider"] for p in body] == list(PROVIDERS)
    groq = next(p for p in body if p["provider"] == "groq")
    assert groq["default_base_url"] == "https://api.groq.com/openai/v1"
    assert groq["auth"] == "bearer" and groq["configured"] is False and groq["enabled"] is None


def test_a_credential_is_stored_encrypted_and_never_returned(admin_client) -> None:
    response = admin_client.put(
        "/api/providers/anthropic/", {"api_key": SECRET}, content_type="application/json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["configured"] and body["has_api_key"] and body["enabled"]
    assert SECRET not in response.content.decode()
    stored = ProviderCredential.objects.get(provider="anthropic")
    assert stored.api_key == SECRET and SECRET not in stored.api_key_encrypted
    for answer in (
        admin_client.get("/api/providers/"),
        admin_client.get("/api/providers/anthropic/"),
        admin_client.patch(
            "/api/providers/anthropic/", {"enabled": False}, content_type="application/json"
        ),
    ):
        assert answer.status_code == 200 and SECRET not in answer.content.decode()
    assert ProviderCredential.objects.get(provider="anthropic").api_key == SECRET  # kept
    assert admin_client.delete("/api/providers/anthropic/").status_code == 204
    assert not ProviderCredential.objects.exists()


@pytest.mark.parametrize(
    ("provider", "body", "field"),
    [
        ("anthropic", {}, "api_key"),  # a key is required
        ("azure", {"api_key": SECRET}, "base_url"),  # every Azure resource has its own
        ("custom", {}, "base_url"),
        ("openai", {"api_key": SECRET, "base_url": "http://169.254.169.254/v1"}, "base_url"),
        ("openai", {"api_key": SECRET, "api_version": "2024-10-21"}, "api_version"),
        (
            "azure",
            {"api_key": SECRET, "base_url": "https://x.openai.azure.com", "api_version": "soon"},
            "api_version",
        ),
        ("openai", {"api_key": 5}, "api_key"),
        ("openai", {"api_key": SECRET, "enabled": "yes"}, "enabled"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(
    admin_client, provider, body, field
) -> None:
    response = admin_client.put(
        f"/api/providers/{provider}/", body, content_type="application/json"
    )
    assert response.status_code == 400 and field in str(response.json()), response.json()
    assert not ProviderCredential.objects.exists()


def test_an_unknown_provider_is_a_404(admin_client) -> None:
    assert admin_client.get("/api/providers/acme/").status_code == 404
    assert (
        admin_client.put(
            "/api/providers/acme/", {"api_key": SECRET}, content_type="application/json"
        ).status_code
        == 404
    )
    assert admin_client.post("/api/providers/openai/check/").status_code == 404  # none stored


@pytest.fixture
def groq() -> Iterator[ProviderServer]:
    server = ProviderServer("groq").start()
    yield server
    server.stop()


def test_the_check_runs_the_providers_free_probe_with_the_stored_key(admin_client, groq) -> None:
    admin_client.put(
        "/api/providers/groq/",
        {"api_key": groq.key, "base_url": groq.base_url},
        content_type="application/json",
    )
    body = admin_client.post("/api/providers/groq/check/").json()
    assert body["status"] == "healthy" and body["detail"] == "GET /models answered 200"
    assert [(s.method, s.path) for s in groq.seen] == [("GET", "/openai/v1/models")]
    admin_client.patch(
        "/api/providers/groq/", {"api_key": "sk-wrong"}, content_type="application/json"
    )
    body = admin_client.post("/api/providers/groq/check/").json()
    assert body["status"] == "unavailable" and "credential refused" in body["detail"]


def test_an_api_key_may_be_allowed_to_call_models_by_name(admin_client) -> None:
    created = admin_client.post(
        "/api/api-keys/", {"name": "direct"}, content_type="application/json"
    ).json()
    assert created["allow_direct_models"] is False
    changed = admin_client.patch(
        f"/api/api-keys/{created['id']}/",
        {"allow_direct_models": True},
        content_type="application/json",
    ).json()
    assert changed["allow_direct_models"] is True
