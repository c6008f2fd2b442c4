"""Bad input to the management API is a 400 naming the field, never a 500: NUL characters in
names that are looked up, null items in lists, values of the wrong JSON type."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from tests.factories import make_instance

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(django_user_model) -> Client:
    user = django_user_model.objects.create_superuser(
        "root", "root@example.com", "a-long-test-password"
    )
    return Client(
        HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}",
        raise_request_exception=False,
    )


def _balancer(**fields: Any) -> dict[str, Any]:
    return {
        "name": "b",
        "serving_name": "b",
        "routing_mode": "ordered",
        "routes": [{"name": "r", "instance": make_instance().instance_id, "is_default": True}],
        **fields,
    }


def test_a_nul_in_the_usage_balancer_filter_is_a_400(api) -> None:
    response = api.get("/api/usage/?balancer=%00")
    assert response.status_code == 400
    assert response.json() == {"balancer": ["Null characters are not allowed."]}


def test_a_nul_in_an_api_key_s_balancer_names_is_a_400(api) -> None:
    response = api.post(
        "/api/api-keys/", {"name": "k", "balancers": ["a\u0000"]}, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json() == {"balancers": ["Null characters are not allowed."]}


def test_a_nul_router_model_is_a_400(api) -> None:
    response = api.post(
        "/api/balancers/", _balancer(router_model="\u0000"), content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json() == {"router_model": ["Null characters are not allowed."]}


@pytest.mark.parametrize("route", [None, "r", 5])
def test_a_route_that_is_not_an_object_is_a_400(api, route: Any) -> None:
    response = api.post(
        "/api/balancers/", _balancer(routes=[route]), content_type="application/json"
    )
    assert response.status_code == 400
    ((key, messages),) = response.json().items()
    assert key == "routes[0]" and isinstance(messages, list) and messages


def test_a_nul_in_a_route_s_target_group_is_a_400(api) -> None:
    routes = [{"name": "r", "target_group": "g\u0000", "is_default": True}]
    response = api.post(
        "/api/balancers/", _balancer(routes=routes), content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json() == {"routes[0].target_group": ["Null characters are not allowed."]}


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/api/api-keys/", {"name": 0}, "name"),
        (
            "/api/target-groups/",
            {"name": "g", "workload_kind": "chat", "enabled": 0, "members": []},
            "enabled",
        ),
        (
            "/api/target-groups/",
            {"name": "g", "workload_kind": "chat", "enabled": "true", "members": []},
            "enabled",
        ),
        (
            "/api/instances/",
            {
                "instance_id": "i",
                "model": "m",
                "provider": "simulator",
                "input_price_per_million": 1,
            },
            "input_price_per_million",
        ),
        (
            "/api/instances/",
            {"instance_id": "i", "model": "m", "provider": "simulator", "quality_tier": "2"},
            "quality_tier",
        ),
    ],
)
def test_a_value_of_the_wrong_json_type_is_a_400(
    api, url: str, body: dict[str, Any], field: str
) -> None:
    response = api.post(url, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert field in response.json()


def test_an_empty_usage_range_is_refused_rather_than_read_as_the_default(api) -> None:
    response = api.get("/api/usage/?range=")
    assert response.status_code == 400
    assert "range" in response.json()
