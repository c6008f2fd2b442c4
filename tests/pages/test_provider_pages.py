"""The Providers pages: every provider listed, a credential saved write-only and checked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from targetgroups.models import ProviderCredential
from tests.provider_server import ProviderServer

pytestmark = pytest.mark.django_db

SECRET = "sk-mistral-very-secret-0123456789"


def test_the_list_shows_every_provider_and_its_state(admin_client) -> None:
    credential = ProviderCredential(provider="mistral")
    credential.api_key = SECRET
    credential.save()
    html = admin_client.get("/providers/").content.decode()
    for code in ("openai", "anthropic", "google", "azure", "ollama", "custom"):
        assert f'data-testid="provider-{code}"' in html
    row = html.split('data-testid="provider-mistral"')[1].split("</tr>")[0]
    assert "stored" in row and "https://api.mistral.ai/v1" in row and SECRET not in html


def test_an_operator_saves_a_credential_and_the_key_is_never_shown(admin_client) -> None:
    page = admin_client.get("/providers/mistral/")
    assert page.status_code == 200 and "Authorization: Bearer" in page.content.decode()
    response = admin_client.post(
        "/providers/mistral/", {"base_url": "", "api_key": SECRET, "enabled": "on"}
    )
    assert response.status_code == 302
    assert ProviderCredential.objects.get(provider="mistral").api_key == SECRET
    html = admin_client.get("/providers/mistral/").content.decode()
    assert "•••• stored" in html and SECRET not in html
    # Blank keeps the key; the box removes it (refused: Mistral needs one).
    admin_client.post("/providers/mistral/", {"base_url": "", "api_key": "", "enabled": "on"})
    assert ProviderCredential.objects.get(provider="mistral").api_key == SECRET
    refused = admin_client.post(
        "/providers/mistral/", {"api_key": "", "clear_api_key": "on", "enabled": "on"}
    )
    assert refused.status_code == 200 and "Mistral needs an API key." in refused.content.decode()
    assert ProviderCredential.objects.get(provider="mistral").api_key == SECRET


def test_azure_asks_for_its_resource_and_api_version(admin_client) -> None:
    html = admin_client.get("/providers/azure/").content.decode()
    assert 'name="api_version"' in html and "openai.azure.com" in html
    assert 'name="api_version"' not in admin_client.get("/providers/groq/").content.decode()
    refused = admin_client.post("/providers/azure/", {"api_key": SECRET, "enabled": "on"})
    assert "Azure OpenAI has no common base URL" in refused.content.decode()
    assert not ProviderCredential.objects.exists()


@pytest.fixture
def mistral() -> Iterator[ProviderServer]:
    server = ProviderServer("mistral").start()
    yield server
    server.stop()


def test_check_and_remove(admin_client, mistral) -> None:
    admin_client.post(
        "/providers/mistral/",
        {"base_url": mistral.base_url, "api_key": mistral.key, "enabled": "on"},
    )
    result = admin_client.post("/providers/mistral/check/", HTTP_HX_REQUEST="true")
    html = result.content.decode()
    assert 'data-testid="check-result"' in html and "healthy" in html
    assert "GET /models answered 200" in html
    removed = admin_client.post("/providers/mistral/remove/")
    assert removed.status_code == 302 and not ProviderCredential.objects.exists()
