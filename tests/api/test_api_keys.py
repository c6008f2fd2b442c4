from __future__ import annotations

import pytest

from gateway.models import ApiKey, hash_api_key
from tests.factories import make_api_key, make_balancer

pytestmark = pytest.mark.django_db


def test_api_key_secret_is_returned_once(admin_client) -> None:
    balancer = make_balancer()

    created = admin_client.post(
        "/api/api-keys/",
        {"name": "ci", "balancers": [balancer.name], "rate_limit_per_minute": 60},
        content_type="application/json",
    )

    assert created.status_code == 201, created.json()
    body = created.json()
    secret = body["secret"]
    key = ApiKey.objects.get()
    assert key.key_hash == hash_api_key(secret)
    assert body["prefix"] == secret[:10] == key.prefix
    assert body["balancers"] == [balancer.name]
    assert body["rate_limit_per_minute"] == 60
    later = [
        admin_client.get("/api/api-keys/"),
        admin_client.get(f"/api/api-keys/{key.pk}/"),
        admin_client.patch(
            f"/api/api-keys/{key.pk}/", {"name": "ci-2"}, content_type="application/json"
        ),
        admin_client.post(f"/api/api-keys/{key.pk}/revoke/"),
    ]
    for response in later:
        assert response.status_code == 200, response.content
        text = response.content.decode()
        assert secret not in text
        assert key.key_hash not in text
        assert '"secret"' not in text


def test_a_key_without_balancers_may_call_every_balancer(admin_client) -> None:
    response = admin_client.post("/api/api-keys/", {"name": "all"}, content_type="application/json")

    assert response.status_code == 201
    assert response.json()["balancers"] == []
    assert response.json()["rate_limit_per_minute"] is None
    assert response.json()["is_active"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "k", "balancers": ["nope"]}, "balancers"),
        ({"name": "k", "rate_limit_per_minute": 0}, "rate_limit_per_minute"),
    ],
)
def test_bad_api_key_fields_are_400s_naming_the_field(admin_client, body: dict, field: str) -> None:
    response = admin_client.post("/api/api-keys/", body, content_type="application/json")

    assert response.status_code == 400
    assert field in response.json()
    assert not ApiKey.objects.exists()


def test_updating_a_key(admin_client) -> None:
    key, _ = make_api_key()
    first, second = make_balancer(), make_balancer()

    response = admin_client.put(
        f"/api/api-keys/{key.pk}/",
        {
            "name": "renamed",
            "balancers": [first.name, second.name],
            "rate_limit_per_minute": 10,
            "enabled": False,
        },
        content_type="application/json",
    )

    assert response.status_code == 200, response.json()
    assert response.json()["balancers"] == sorted([first.name, second.name])
    key.refresh_from_db()
    assert (key.name, key.rate_limit_per_minute, key.enabled) == ("renamed", 10, False)
    cleared = admin_client.patch(
        f"/api/api-keys/{key.pk}/",
        {"balancers": [], "rate_limit_per_minute": None},
        content_type="application/json",
    )
    assert cleared.json()["balancers"] == []
    assert cleared.json()["rate_limit_per_minute"] is None


def test_revoking_a_key_is_final(admin_client) -> None:
    key, _ = make_api_key()

    revoked = admin_client.post(f"/api/api-keys/{key.pk}/revoke/")
    reenabled = admin_client.patch(
        f"/api/api-keys/{key.pk}/", {"enabled": True}, content_type="application/json"
    )

    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert revoked.json()["is_active"] is False
    assert reenabled.status_code == 400
    assert "enabled" in reenabled.json()
    key.refresh_from_db()
    assert key.revoked_at is not None and not key.is_active


def test_deleting_a_key(admin_client) -> None:
    key, _ = make_api_key()

    assert admin_client.delete(f"/api/api-keys/{key.pk}/").status_code == 204
    assert not ApiKey.objects.exists()
    assert admin_client.get(f"/api/api-keys/{key.pk}/").status_code == 404
    assert admin_client.post(f"/api/api-keys/{key.pk}/revoke/").status_code == 404
