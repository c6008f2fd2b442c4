from __future__ import annotations

import pytest

from targetgroups.models import Instance
from tests.factories import make_balancer, make_group, make_instance, make_router_model

pytestmark = pytest.mark.django_db

UPSTREAM_KEY = "sk-upstream-very-secret-0123456789"


def _openai_instance(**fields: object) -> dict[str, object]:
    return {
        "instance_id": "inst_openai",
        "display_name": "OpenAI mini",
        "provider": "openai",
        "base_url": "https://api.openai.com/v1",
        "model": "gpt-4o-mini",
        "api_key": UPSTREAM_KEY,
        "input_price_per_million": "0.15",
        "output_price_per_million": "0.60",
        **fields,
    }


def test_creating_an_instance_returns_it_without_the_key(admin_client) -> None:
    response = admin_client.post(
        "/api/instances/", _openai_instance(), content_type="application/json"
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["instance_id"] == "inst_openai"
    assert body["has_api_key"] is True
    assert "api_key" not in body
    assert Instance.objects.get(instance_id="inst_openai").api_key == UPSTREAM_KEY


def test_instance_api_key_is_never_returned(admin_client) -> None:
    admin_client.post("/api/instances/", _openai_instance(), content_type="application/json")

    responses = [
        admin_client.get("/api/instances/"),
        admin_client.get("/api/instances/inst_openai/"),
        admin_client.patch(
            "/api/instances/inst_openai/",
            {"display_name": "Renamed"},
            content_type="application/json",
        ),
        admin_client.put(
            "/api/instances/inst_openai/", _openai_instance(), content_type="application/json"
        ),
    ]

    for response in responses:
        assert response.status_code == 200, response.content
        assert UPSTREAM_KEY not in response.content.decode()
        assert b'"api_key"' not in response.content


def test_updating_without_an_api_key_keeps_the_stored_key(admin_client) -> None:
    instance = make_instance(
        provider="openai", base_url="https://example.com/v1", api_key=UPSTREAM_KEY
    )

    response = admin_client.patch(
        f"/api/instances/{instance.instance_id}/",
        {"model": "other-model"},
        content_type="application/json",
    )

    assert response.status_code == 200, response.json()
    instance.refresh_from_db()
    assert instance.model == "other-model"
    assert instance.api_key == UPSTREAM_KEY


def test_an_empty_api_key_clears_the_stored_key(admin_client) -> None:
    instance = make_instance(api_key=UPSTREAM_KEY)

    response = admin_client.patch(
        f"/api/instances/{instance.instance_id}/", {"api_key": ""}, content_type="application/json"
    )

    assert response.status_code == 200
    assert response.json()["has_api_key"] is False
    instance.refresh_from_db()
    assert instance.api_key == ""


def test_put_replaces_fields_and_may_repeat_the_instance_id(admin_client) -> None:
    instance = make_instance()

    response = admin_client.put(
        f"/api/instances/{instance.instance_id}/",
        {
            "instance_id": instance.instance_id,
            "model": "sim-big",
            "provider": "simulator",
            "quality_tier": 5,
        },
        content_type="application/json",
    )

    assert response.status_code == 200, response.json()
    assert response.json()["model"] == "sim-big"
    assert response.json()["quality_tier"] == 5


def test_the_instance_id_cannot_change(admin_client) -> None:
    instance = make_instance()

    response = admin_client.patch(
        f"/api/instances/{instance.instance_id}/",
        {"instance_id": "inst_new"},
        content_type="application/json",
    )

    assert response.status_code == 400
    assert "instance_id" in response.json()


def test_model_validation_errors_name_the_field(admin_client) -> None:
    response = admin_client.post(
        "/api/instances/", _openai_instance(base_url=""), content_type="application/json"
    )

    assert response.status_code == 400
    assert "base_url" in response.json()
    assert not Instance.objects.exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"instance_id": "Bad Id"}, "instance_id"),
        ({"provider": "nope"}, "provider"),
        ({"quality_tier": 9}, "quality_tier"),
        ({"connect_timeout": "nan"}, "connect_timeout"),
        ({"input_price_per_million": "-1"}, "input_price_per_million"),
        ({"options": {"note": "nul\u0000"}}, "options"),
        ({"provider": "simulator", "options": {"latency": 5}}, "options"),
        ({"provider": "builtin", "model": "gpt-5"}, "model"),
    ],
)
def test_bad_instance_fields_are_400s_naming_the_field(
    admin_client, fields: dict, field: str
) -> None:
    response = admin_client.post(
        "/api/instances/", _openai_instance(**fields), content_type="application/json"
    )

    assert response.status_code == 400
    assert field in response.json()


def test_a_duplicate_instance_id_is_refused(admin_client) -> None:
    make_instance(instance_id="inst_openai")

    response = admin_client.post(
        "/api/instances/", _openai_instance(), content_type="application/json"
    )

    assert response.status_code == 400
    assert "instance_id" in response.json()


def test_changing_the_kind_of_an_instance_in_use_is_refused(admin_client) -> None:
    instance = make_instance()
    make_group(instances=[instance])

    response = admin_client.patch(
        f"/api/instances/{instance.instance_id}/",
        {"workload_kind": "embeddings"},
        content_type="application/json",
    )

    assert response.status_code == 400
    assert "workload_kind" in response.json()


def test_deleting_an_unused_instance(admin_client) -> None:
    instance = make_instance()

    response = admin_client.delete(f"/api/instances/{instance.instance_id}/")

    assert response.status_code == 204
    assert not Instance.objects.filter(pk=instance.pk).exists()


def test_deleting_an_instance_in_use_is_refused_naming_its_users(admin_client) -> None:
    instance = make_instance()
    group = make_group(instances=[instance])
    router = make_router_model()
    balancer = make_balancer(
        routing_mode="intent_classifier",
        router_model=router,
        routes=[{"name": "main", "intent": "All.", "instance": instance, "is_default": True}],
    )

    in_group = admin_client.delete(f"/api/instances/{instance.instance_id}/")
    as_router = admin_client.delete(f"/api/instances/{router.instance_id}/")

    assert in_group.status_code == 400
    message = in_group.json()["non_field_errors"][0]
    assert group.name in message
    assert f"{balancer.name}/main" in message
    assert as_router.status_code == 400
    assert balancer.name in as_router.json()["non_field_errors"][0]
    assert Instance.objects.filter(pk__in=[instance.pk, router.pk]).count() == 2


def test_an_unknown_instance_is_a_404(admin_client) -> None:
    assert admin_client.get("/api/instances/inst_nope/").status_code == 404
    assert (
        admin_client.patch(
            "/api/instances/inst_nope/", {}, content_type="application/json"
        ).status_code
        == 404
    )
    assert admin_client.delete("/api/instances/inst_nope/").status_code == 404
