from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from tests.factories import make_instance

pytestmark = pytest.mark.django_db

API_URLS = ["/api/instances/", "/api/target-groups/", "/api/balancers/", "/api/api-keys/"]


@pytest.fixture
def admin_token(django_user_model) -> str:
    user = django_user_model.objects.create_user(
        "ops", "ops@example.com", "a-long-test-password", is_staff=True
    )
    return Token.objects.create(user=user).key


@pytest.mark.parametrize("url", API_URLS)
def test_anonymous_requests_are_refused(client, url: str) -> None:
    assert client.get(url).status_code in (401, 403)
    assert client.post(url, {}, content_type="application/json").status_code in (401, 403)


@pytest.mark.parametrize("url", API_URLS)
def test_non_staff_users_are_forbidden(client, django_user_model, url: str) -> None:
    client.force_login(
        django_user_model.objects.create_user("viewer", password="a-long-test-password")
    )

    assert client.get(url).status_code == 403


def test_token_auth_works(admin_token) -> None:
    # A token client sends no CSRF token; writes must still go through.
    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Token {admin_token}")

    created = client.post(
        "/api/instances/",
        {"instance_id": "inst_t", "provider": "simulator", "model": "sim"},
        content_type="application/json",
    )
    listed = client.get("/api/instances/")

    assert created.status_code == 201, created.content
    assert [i["instance_id"] for i in listed.json()] == ["inst_t"]


def test_a_bad_token_is_refused() -> None:
    response = Client(HTTP_AUTHORIZATION="Token not-a-real-token").get("/api/instances/")

    # 403 rather than 401: session authentication comes first, and it sends no WWW-Authenticate.
    assert response.status_code in (401, 403)
    assert response.json() == {"detail": "Invalid token."}


def test_session_writes_need_the_csrf_token(django_user_model) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(
        django_user_model.objects.create_superuser(
            "root", "root@example.com", "a-long-test-password"
        )
    )

    response = client.post("/api/api-keys/", {"name": "k"}, content_type="application/json")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_unsupported_methods_are_405_listing_the_allowed_ones(admin_client) -> None:
    instance = make_instance()

    collection = admin_client.put("/api/instances/", {}, content_type="application/json")
    item = admin_client.post(
        f"/api/instances/{instance.instance_id}/", {}, content_type="application/json"
    )

    assert collection.status_code == 405
    assert set(collection["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert item.status_code == 405
    assert set(item["Allow"].replace(" ", "").split(",")) >= {"GET", "PUT", "PATCH", "DELETE"}


def test_head_and_options_are_answered(admin_client) -> None:
    assert admin_client.head("/api/instances/").status_code == 200
    assert admin_client.options("/api/instances/").status_code == 200


def test_the_browsable_api_renders(admin_client) -> None:
    make_instance()

    response = admin_client.get("/api/instances/", HTTP_ACCEPT="text/html")

    assert response.status_code == 200


def test_schema_is_served(client) -> None:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {
        "/api/instances/",
        "/api/instances/{instance_id}/",
        "/api/target-groups/",
        "/api/target-groups/{name}/",
        "/api/target-groups/import/",
        "/api/target-groups/{name}/export/",
        "/api/balancers/",
        "/api/balancers/{name}/",
        "/api/api-keys/",
        "/api/api-keys/{key_id}/",
        "/api/api-keys/{key_id}/revoke/",
    } <= set(paths)
    assert set(paths["/api/instances/{instance_id}/"]) >= {"get", "put", "patch", "delete"}
    instance = response.json()["components"]["schemas"]["Instance"]["properties"]
    assert "api_key" not in instance and "has_api_key" in instance


def test_form_encoded_bodies_are_refused(admin_client) -> None:
    # Form rules would read the omitted `enabled` as false and create a disabled instance.
    response = admin_client.post(
        "/api/instances/",
        "instance_id=inst_f&model=m&provider=simulator",
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 415
