"""Gateway API keys and the playground."""

from __future__ import annotations

import pytest

from gateway.models import ApiKey, hash_api_key


def test_a_created_key_shows_its_secret_once(admin_client, demo) -> None:
    response = admin_client.post(
        "/api-keys/",
        {"name": "support-app", "balancers": ["support-balancer"], "rate_limit_per_minute": "60"},
        headers={"HX-Request": "true"},
    )
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html and 'id="keys-panel"' in html
    key = ApiKey.objects.get(name="support-app")
    secret = html.split('id="secret-value">')[1].split("<")[0]
    assert hash_api_key(secret) == key.key_hash
    assert [b.name for b in key.balancers.all()] == [
        "support-balancer"
    ] and key.rate_limit_per_minute == 60
    assert secret not in admin_client.get("/api-keys/").content.decode()


def test_key_form_errors_and_revoke(admin_client, demo) -> None:
    html = admin_client.post(
        "/api-keys/", {"name": "", "rate_limit_per_minute": "0"}
    ).content.decode()
    assert "This field is required." in html and "greater than or equal to 1" in html
    admin_client.post("/api-keys/", {"name": "old"})
    key = ApiKey.objects.get(name="old")
    row = admin_client.post(
        f"/api-keys/{key.pk}/revoke/", headers={"HX-Request": "true"}
    ).content.decode()
    assert row.lstrip().startswith(f'<tr id="key-{key.pk}"') and "revoked" in row
    key.refresh_from_db()
    assert key.revoked_at is not None and key.enabled is False


def test_the_playground_page_and_route_picker(admin_client, demo) -> None:
    html = admin_client.get("/playground/?balancer=support-balancer").content.decode()
    assert '<option value="fallback">fallback (default)</option>' in html
    fragment = admin_client.get(
        "/playground/balancer/?balancer=embed-balancer", headers={"HX-Request": "true"}
    ).content.decode()
    assert 'id="balancer-fields"' in fragment and "primary" in fragment and "<html" not in fragment
    assert admin_client.get("/playground/balancer/?balancer=nope").status_code == 404


def test_the_playground_opens_on_a_chat_balancer(admin_client, demo) -> None:
    # embed-balancer sorts first; a new operator's first prompt is a chat prompt.
    html = admin_client.get("/playground/").content.decode()
    assert '<option value="support-auto"' in html
    assert 'value="support-auto" selected' in html or 'value="support-balancer" selected' in html


@pytest.mark.django_db(transaction=True)
def test_the_playground_sends_through_a_chosen_route(admin_client, demo, usage_writer) -> None:
    html = admin_client.post(
        "/playground/send/",
        {"balancer": "support-balancer", "route": "reasoning", "prompt": "Decide this refund."},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert (
        "route reasoning" in html
        and "instance gpt-oss-120b" in html
        and "forced onto <b>reasoning</b>" in html
    )


@pytest.mark.django_db(transaction=True)
def test_the_playground_may_force_an_enabled_route_but_never_a_disabled_one(
    admin_client, demo, usage_writer
) -> None:
    from balancers.models import Route
    from gateway.models import UsageEvent
    from tests.pages.ui_support import usage_writer_reset

    route = Route.objects.get(balancer__name="support-balancer", name="reasoning")
    route.enabled = False
    route.save()  # bumps the config version
    page = admin_client.get("/playground/?balancer=support-balancer").content.decode()
    assert '<option value="reasoning" disabled>reasoning (disabled)</option>' in page
    refused = admin_client.post(
        "/playground/send/",
        {"balancer": "support-balancer", "route": "reasoning", "prompt": "x"},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert "HTTP 400" in refused and "Disabled route" in refused
    forced = admin_client.post(
        "/playground/send/",
        {"balancer": "support-balancer", "route": "efficient", "prompt": "x"},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert "route efficient" in forced and "forced onto <b>efficient</b>" in forced
    usage_writer_reset()
    # The refusal is recorded like any other request.
    assert (
        UsageEvent.objects.filter(
            status_code=400, error_type="route_not_available", serving_name="support-balancer"
        ).count()
        == 1
    )


@pytest.mark.django_db(transaction=True)
def test_the_playground_sends_to_a_goal_name_with_a_pool_and_a_preference_and_shows_the_ranking(
    admin_client, demo, usage_writer
) -> None:
    page = admin_client.get("/playground/").content.decode()
    assert 'data-testid="playground-auto"' in page and '<option value="auto-code">' in page
    assert 'value="qwen2.5-coder-7b"' in page and 'value="intent-classifier"' not in page
    html = admin_client.post(
        "/playground/auto/",
        {
            "goal": "auto",
            "models": ["gpt-oss-120b", "backup-small"],
            "preference": "quality",
            "prompt": "Decide this refund.",
        },
        headers={"HX-Request": "true"},
    ).content.decode()
    assert "instance gpt-oss-120b" in html and "Decision <b>auto:quality</b>" in html
    ranking = html.split('data-testid="playground-ranking"')[1]
    assert ranking.index(">gpt-oss-120b<") < ranking.index(">backup-small<")
    assert "skipped: not in the requested pool (model_routing_config.models)" in ranking
    refused = admin_client.post(
        "/playground/auto/",
        {"goal": "auto", "preference": "fastest"},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert "HTTP 400" in refused and "Unknown preference" in refused
    plain = admin_client.post(
        "/playground/auto/", {"goal": "auto-code", "prompt": "Write a function."}
    )
    assert plain.status_code == 200 and "qwen2.5-coder-7b" in plain.content.decode()
    assert admin_client.post("/playground/auto/", {"goal": "gpt-4o"}).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_the_playground_offers_and_calls_the_models_of_each_stored_provider_credential(
    admin_client, usage_writer
) -> None:
    from targetgroups.models import ProviderCredential
    from tests.provider_server import CONTENT, ProviderServer

    page = admin_client.get("/playground/").content.decode()
    assert 'data-testid="playground-direct"' not in page  # no credential: no card
    server = ProviderServer("anthropic").start()
    try:
        credential = ProviderCredential(provider="anthropic", base_url=server.base_url)
        credential.api_key = server.key
        credential.full_clean()
        credential.save()
        page = admin_client.get("/playground/").content.decode()
        assert 'data-testid="playground-direct"' in page
        assert '<optgroup label="Anthropic">' in page
        assert '<option value="claude-sonnet-4-5">' in page and 'value="gpt-4o"' not in page
        html = admin_client.post(
            "/playground/direct/",
            {"model": "claude-sonnet-4-5", "prompt": "Hi"},
            headers={"HX-Request": "true"},
        ).content.decode()
        assert "HTTP 200" in html and CONTENT in html
        assert "instance anthropic:claude-sonnet-4-5" in html
        assert "Decision <b>direct:anthropic</b>" in html
        assert server.seen[-1].path == "/v1/messages"
        # Only the stored providers' models: anything else is a 404, not a call.
        assert admin_client.post("/playground/direct/", {"model": "gpt-4o"}).status_code == 404
    finally:
        server.stop()
