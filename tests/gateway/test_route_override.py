"""X-Balancer-Route: enabled routes only, and only for keys allowed to choose the route."""

from __future__ import annotations

import io

import httpx
import pytest
from django.core.management import call_command

from gateway.models import ApiKey, hash_api_key
from tests.factories import make_api_key, make_balancer, make_instance

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "hello"}]


def override_balancer(serving_name: str) -> None:
    make_balancer(
        serving_name=serving_name,
        routes=[
            {
                "name": "main",
                "intent": "x",
                "instance": make_instance(),
                "priority": 1,
                "is_default": True,
            },
            {"name": "spare", "intent": "y", "instance": make_instance(), "priority": 2},
            {
                "name": "retired",
                "intent": "z",
                "instance": make_instance(),
                "priority": 3,
                "enabled": False,
            },
        ],
    )


def ask(
    gateway, secret: str, serving_name: str, route: str, path: str = "/chat/completions"
) -> httpx.Response:
    return httpx.post(
        gateway.v1 + path,
        headers={"Authorization": f"Bearer {secret}", "X-Balancer-Route": route},
        json={"model": serving_name, "messages": MESSAGES},
        timeout=10,
    )


def test_a_key_not_allowed_to_override_cannot_choose_a_route(gateway):
    override_balancer("ov-refused")
    _, secret = make_api_key()
    gateway.wait_for_config()
    for path in ("/chat/completions", "/explain"):
        response = ask(gateway, secret, "ov-refused", "spare", path)
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "permission_error",
            "route_override_not_allowed",
            "X-Balancer-Route",
        )
        assert "X-Balancer-Route" in error["message"]


def test_an_override_cannot_force_a_disabled_or_unknown_route(gateway):
    override_balancer("ov-disabled")
    _, secret = make_api_key(allow_route_override=True)
    gateway.wait_for_config()
    for route, word in (("retired", "Disabled"), ("nope", "Unknown")):
        response = ask(gateway, secret, "ov-disabled", route)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("route_not_available", "X-Balancer-Route")
        assert word in error["message"] and "enabled routes: main, spare" in error["message"]


def test_a_key_allowed_to_override_forces_an_enabled_route(gateway):
    override_balancer("ov-allowed")
    _, secret = make_api_key(allow_route_override=True)
    gateway.wait_for_config()
    response = ask(gateway, secret, "ov-allowed", "spare")
    assert response.status_code == 200, response.text
    assert (response.headers["x-balancer-route"], response.headers["x-balancer-decision"]) == (
        "spare",
        "override",
    )
    explained = ask(gateway, secret, "ov-allowed", "spare", "/explain").json()
    assert (explained["route"], explained["reason"]) == ("spare", "override")


def test_route_override_is_off_by_default_and_settable_everywhere(admin_client):
    make_balancer(name="ov-b")
    assert ApiKey._meta.get_field("allow_route_override").default is False
    created = admin_client.post(
        "/api/api-keys/", {"name": "plain"}, content_type="application/json"
    ).json()
    assert created["allow_route_override"] is False
    allowed = admin_client.post(
        "/api/api-keys/",
        {"name": "tool", "allow_route_override": True},
        content_type="application/json",
    ).json()
    assert allowed["allow_route_override"] is True
    patched = admin_client.patch(
        f"/api/api-keys/{created['id']}/",
        {"allow_route_override": True},
        content_type="application/json",
    )
    assert patched.json()["allow_route_override"] is True
    assert ApiKey.objects.get(pk=created["id"]).allow_route_override is True

    admin_client.post("/api-keys/", {"name": "from-page", "allow_route_override": "on"})
    assert ApiKey.objects.get(name="from-page").allow_route_override is True
    page = admin_client.get("/api-keys/").content.decode()
    assert 'name="allow_route_override"' in page

    admin_client.post(
        "/admin/gateway/apikey/add/",
        {"name": "from-admin", "allow_route_override": "on", "enabled": "on"},
    )
    assert ApiKey.objects.get(name="from-admin").allow_route_override is True

    out = io.StringIO()
    call_command("create_api_key", "--name", "from-cli", "--allow-route-override", stdout=out)
    assert (
        ApiKey.objects.get(key_hash=hash_api_key(out.getvalue().strip())).allow_route_override
        is True
    )
    call_command("create_api_key", "--name", "cli-plain", stdout=io.StringIO())
    assert ApiKey.objects.get(name="cli-plain").allow_route_override is False
