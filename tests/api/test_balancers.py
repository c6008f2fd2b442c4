from __future__ import annotations

import pytest

from balancers.models import Balancer, Route
from tests.factories import make_balancer, make_group, make_instance, make_router_model

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup() -> dict:
    return {
        "router": make_router_model(instance_id="router"),
        "fast": make_instance(instance_id="fast"),
        "smart": make_instance(instance_id="smart"),
        "pool": make_group(name="pool", instances=[make_instance(instance_id="pool_a")]),
        "embedder": make_instance(instance_id="embedder", workload_kind="embeddings"),
    }


def _balancer(**fields: object) -> dict:
    return {
        "name": "support",
        "serving_name": "support-balancer",
        "workload_kind": "chat",
        "routing_mode": "intent_classifier",
        "router_model": "router",
        "routes": [
            {
                "name": "efficient",
                "intent": "Simple questions.",
                "instance": "fast",
                "priority": 1,
                "examples": ["How do I reset my password?"],
            },
            {
                "name": "reasoning",
                "intent": "Hard problems.",
                "target_group": "pool",
                "priority": 2,
            },
            {
                "name": "fallback",
                "intent": "Anything else.",
                "instance": "smart",
                "priority": 3,
                "is_default": True,
            },
        ],
        **fields,
    }


def test_creating_a_balancer_with_routes(admin_client, setup) -> None:
    response = admin_client.post("/api/balancers/", _balancer(), content_type="application/json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["router_model"] == "router"
    assert [
        (r["name"], r["target_group"], r["instance"], r["is_default"]) for r in body["routes"]
    ] == [
        ("efficient", None, "fast", False),
        ("reasoning", "pool", None, False),
        ("fallback", None, "smart", True),
    ]
    assert body["routes"][0]["examples"] == ["How do I reset my password?"]
    assert admin_client.get("/api/balancers/support/").json() == body
    assert admin_client.get("/api/balancers/").json() == [body]


def test_creating_a_balancer_without_a_default_route_is_refused(admin_client, setup) -> None:
    document = _balancer()
    document["routes"][2]["is_default"] = False

    response = admin_client.post("/api/balancers/", document, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "routes": ["Mark one route as the default: it answers prompts that match no other route."]
    }
    assert not Balancer.objects.exists()


def test_two_default_routes_are_refused(admin_client, setup) -> None:
    document = _balancer()
    document["routes"][0]["is_default"] = True

    response = admin_client.post("/api/balancers/", document, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {"routes": ["Only one route can be the default."]}


def test_a_balancer_without_routes_is_refused(admin_client, setup) -> None:
    assert admin_client.post(
        "/api/balancers/", _balancer(routes=[]), content_type="application/json"
    ).json() == {"routes": ["Add at least one route."]}
    assert (
        "routes"
        in admin_client.post(
            "/api/balancers/", {**_balancer(), "routes": None}, content_type="application/json"
        ).json()
    )


def test_service_errors_keep_their_keys(admin_client, setup) -> None:
    document = _balancer(router_model=None)
    document["routes"][0]["instance"] = "embedder"
    document["routes"][1]["intent"] = ""
    document["routes"][2]["target_group"] = "pool"

    response = admin_client.post("/api/balancers/", document, content_type="application/json")

    assert response.status_code == 400
    assert set(response.json()) == {
        "router_model",
        "routes[0].destination",
        "routes[1].intent",
        "routes[2].destination",
    }
    assert all(isinstance(messages, list) for messages in response.json().values())


def test_serializer_errors_are_keyed_like_service_errors(admin_client, setup) -> None:
    document = _balancer(router_model="nope")
    document["routes"][1]["target_group"] = "no-such-group"
    document["routes"][2]["weight"] = 5000
    document["routes"][0] = "not a route"

    response = admin_client.post("/api/balancers/", document, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "router_model": ["No instance with instance_id 'nope'."],
        "routes[0]": ["Invalid data. Expected a dictionary, but got str."],
        "routes[1].target_group": ["No target group named 'no-such-group'."],
        "routes[2].weight": ["Ensure this value is less than or equal to 1000."],
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Support Balancer"}, "name"),
        ({"serving_name": "bad name!"}, "serving_name"),
        ({"routing_mode": "psychic"}, "routing_mode"),
        ({"attempt_budget": 0}, "attempt_budget"),
        (
            {"router_model": "fast", "workload_kind": "embeddings", "routing_mode": "ordered"},
            "routes[0].destination",
        ),
        ({"router_model": "embedder"}, "router_model"),
    ],
)
def test_bad_balancer_fields_are_400s_naming_the_field(
    admin_client, setup, change: dict, field: str
) -> None:
    response = admin_client.post(
        "/api/balancers/", _balancer(**change), content_type="application/json"
    )

    assert response.status_code == 400
    assert field in response.json()
    assert not Balancer.objects.exists()


def test_duplicate_route_names_are_refused(admin_client, setup) -> None:
    document = _balancer()
    document["routes"][1]["name"] = "efficient"

    response = admin_client.post("/api/balancers/", document, content_type="application/json")

    assert response.status_code == 400
    assert "efficient" in response.json()["routes"][0]


def test_a_taken_serving_name_is_refused(admin_client, setup) -> None:
    make_balancer(serving_name="support-balancer")

    response = admin_client.post("/api/balancers/", _balancer(), content_type="application/json")

    assert response.status_code == 400
    assert "serving_name" in response.json()


def test_put_replaces_the_route_set_and_moves_the_default(admin_client, setup) -> None:
    admin_client.post("/api/balancers/", _balancer(), content_type="application/json")
    document = _balancer(routing_mode="ordered", router_model=None)
    document["routes"] = [
        {"name": "efficient", "instance": "fast", "is_default": True},
        {"name": "backup", "target_group": "pool", "priority": 2},
    ]
    del document["name"]

    response = admin_client.put(
        "/api/balancers/support/", document, content_type="application/json"
    )

    assert response.status_code == 200, response.json()
    assert [(r["name"], r["is_default"]) for r in response.json()["routes"]] == [
        ("efficient", True),
        ("backup", False),
    ]
    assert response.json()["router_model"] is None
    assert set(Route.objects.values_list("name", flat=True)) == {"efficient", "backup"}


def test_patch_keeps_the_routes_it_does_not_mention(admin_client, setup) -> None:
    admin_client.post("/api/balancers/", _balancer(), content_type="application/json")

    response = admin_client.patch(
        "/api/balancers/support/",
        {"serving_name": "support-v2", "attempt_budget": 2},
        content_type="application/json",
    )

    assert response.status_code == 200, response.json()
    assert response.json()["serving_name"] == "support-v2"
    assert response.json()["attempt_budget"] == 2
    assert [r["name"] for r in response.json()["routes"]] == ["efficient", "reasoning", "fallback"]


def test_patch_is_checked_against_the_kept_routes(admin_client, setup) -> None:
    balancer = make_balancer(
        routes=[{"name": "main", "instance": setup["fast"], "is_default": True}]
    )

    response = admin_client.patch(
        f"/api/balancers/{balancer.name}/",
        {"workload_kind": "embeddings"},
        content_type="application/json",
    )

    assert response.status_code == 400
    assert "routes[0].destination" in response.json()
    balancer.refresh_from_db()
    assert balancer.workload_kind == "chat"


def test_a_failed_update_changes_nothing(admin_client, setup) -> None:
    admin_client.post("/api/balancers/", _balancer(), content_type="application/json")
    before = admin_client.get("/api/balancers/support/").json()
    document = _balancer(description="changed")
    document["routes"][2]["is_default"] = False

    response = admin_client.put(
        "/api/balancers/support/", document, content_type="application/json"
    )

    assert response.status_code == 400
    assert admin_client.get("/api/balancers/support/").json() == before


def test_the_balancer_name_cannot_change(admin_client, setup) -> None:
    admin_client.post("/api/balancers/", _balancer(), content_type="application/json")

    response = admin_client.patch(
        "/api/balancers/support/", {"name": "other"}, content_type="application/json"
    )

    assert response.status_code == 400
    assert "name" in response.json()


def test_a_body_that_is_not_an_object_is_a_400(admin_client, setup) -> None:
    admin_client.post("/api/balancers/", _balancer(), content_type="application/json")

    for method in (admin_client.post, admin_client.put, admin_client.patch):
        url = "/api/balancers/" if method == admin_client.post else "/api/balancers/support/"
        response = method(url, ["x"], content_type="application/json")
        assert response.status_code == 400, (method, response.content)


def test_deleting_a_balancer_deletes_its_routes_not_their_destinations(admin_client, setup) -> None:
    admin_client.post("/api/balancers/", _balancer(), content_type="application/json")

    response = admin_client.delete("/api/balancers/support/")

    assert response.status_code == 204
    assert not Route.objects.exists()
    assert admin_client.get("/api/target-groups/pool/").status_code == 200
    assert admin_client.get("/api/balancers/support/").status_code == 404


def test_the_response_cache_and_savings_baseline_are_set_through_the_api(
    admin_client, setup
) -> None:
    created = admin_client.post(
        "/api/balancers/", _balancer(), content_type="application/json"
    ).json()
    assert (created["cache_mode"], created["cache_ttl_seconds"], created["baseline_route"]) == (
        "off",
        300,
        "",
    )

    response = admin_client.patch(
        "/api/balancers/support/",
        {
            "cache_mode": "semantic",
            "cache_ttl_seconds": 60,
            "cache_similarity_threshold": 0.92,
            "cache_shared_across_keys": True,
            "baseline_route": "reasoning",
        },
        content_type="application/json",
    )

    assert response.status_code == 200, response.json()
    balancer = Balancer.objects.get(name="support")
    assert (
        balancer.cache_mode,
        balancer.cache_ttl_seconds,
        balancer.cache_similarity_threshold,
        balancer.cache_shared_across_keys,
        balancer.baseline_route,
    ) == ("semantic", 60, 0.92, True, "reasoning")
    for change, field in (
        ({"cache_mode": "always"}, "cache_mode"),
        ({"cache_ttl_seconds": 0}, "cache_ttl_seconds"),
        ({"cache_similarity_threshold": 0.2}, "cache_similarity_threshold"),
        ({"baseline_route": "nowhere"}, "baseline_route"),
    ):
        refused = admin_client.patch(
            "/api/balancers/support/", change, content_type="application/json"
        )
        assert refused.status_code == 400 and field in refused.json(), refused.json()


def test_an_auto_balancer_may_rank_by_code_and_an_unknown_preference_is_refused(
    admin_client, setup
) -> None:
    document = _balancer(routing_mode="auto", auto_preference="code", router_model=None)
    response = admin_client.post("/api/balancers/", document, content_type="application/json")
    assert response.status_code == 201, response.json()
    assert response.json()["auto_preference"] == "code"
    refused = admin_client.post(
        "/api/balancers/",
        _balancer(
            name="other",
            serving_name="other",
            routing_mode="auto",
            auto_preference="psychic",
            router_model=None,
        ),
        content_type="application/json",
    )
    assert refused.status_code == 400 and "auto_preference" in str(refused.json())


def test_an_auto_balancers_exclusions_are_saved_and_an_unknown_name_is_a_400(
    admin_client, setup
) -> None:
    auto = {"routing_mode": "auto", "auto_preference": "cost", "router_model": None}
    refused = admin_client.post(
        "/api/balancers/",
        _balancer(**auto, auto_exclusions=["fast", "no-such-model"]),
        content_type="application/json",
    )
    assert refused.status_code == 400
    assert "no-such-model" in str(refused.json()["auto_exclusions"])
    response = admin_client.post(
        "/api/balancers/",
        _balancer(**auto, auto_exclusions=["fast"]),
        content_type="application/json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["auto_exclusions"] == ["fast"]
