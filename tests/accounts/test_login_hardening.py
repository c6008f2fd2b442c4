"""Login throttling (django-axes) on the login page and the admin's; the admin shows a new
API key's secret in its response page, never in a cookie."""

from __future__ import annotations

import pytest
from django.test import Client

from gateway.models import ApiKey, hash_api_key

PASSWORD = "a-long-test-password"
pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_superuser("ops", "ops@example.com", PASSWORD)


@pytest.mark.parametrize("login_url", ["/login/", "/admin/login/"])
def test_wrong_passwords_lock_the_login_out(operator, settings, login_url: str) -> None:
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert client.post(login_url, {"username": "ops", "password": "wrong"}).status_code == 200
    locked = client.post(login_url, {"username": "ops", "password": "wrong"})
    assert locked.status_code == 429 and "Too many sign-in attempts" in locked.content.decode()

    # Even the right password is refused during the cool-off, and no session is opened.
    again = client.post(login_url, {"username": "ops", "password": PASSWORD})
    assert again.status_code == 429 and "sessionid" not in again.cookies


def test_another_address_or_user_is_not_locked_out(operator, settings, django_user_model) -> None:
    django_user_model.objects.create_user("other", password=PASSWORD)
    for _ in range(settings.AXES_FAILURE_LIMIT):
        Client(REMOTE_ADDR="10.0.0.1").post("/login/", {"username": "ops", "password": "wrong"})

    from_elsewhere = Client(REMOTE_ADDR="10.0.0.2").post(
        "/login/", {"username": "ops", "password": PASSWORD}
    )
    other_user = Client(REMOTE_ADDR="10.0.0.1").post(
        "/login/", {"username": "other", "password": PASSWORD}
    )
    assert from_elsewhere.status_code == 302 and other_user.status_code == 302


def test_a_successful_login_resets_the_count(operator, settings) -> None:
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        client.post("/login/", {"username": "ops", "password": "wrong"})
    assert client.post("/login/", {"username": "ops", "password": PASSWORD}).status_code == 302
    client.post("/logout/")
    assert client.post("/login/", {"username": "ops", "password": "wrong"}).status_code == 200


def test_an_admin_created_key_shows_its_secret_in_the_page_not_in_a_cookie(operator) -> None:
    client = Client()
    client.force_login(operator)

    response = client.post("/admin/gateway/apikey/add/", {"name": "from-admin", "enabled": "on"})

    html = response.content.decode()
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    secret = html.split('id="secret-value"')[1].split(">")[1].split("<")[0]
    key = ApiKey.objects.get(name="from-admin")
    assert hash_api_key(secret) == key.key_hash
    assert all(secret not in morsel.value for morsel in response.cookies.values())
    assert secret not in str(client.session.items())
    assert secret not in client.get(f"/admin/gateway/apikey/{key.pk}/change/").content.decode()
