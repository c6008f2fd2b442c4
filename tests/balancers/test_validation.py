"""The balancer rules, the same everywhere: exactly one default route, kinds that match, a router
model."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from balancers.models import Balancer, Route
from balancers.services import balancer_save
from balancers.validation import NO_DEFAULT
from tests.factories import make_balancer, make_group, make_instance, make_router_model

pytestmark = pytest.mark.django_db


def fields(**extra):
    return {
        "name": "b1",
        "serving_name": "b1",
        "workload_kind": "chat",
        "routing_mode": "ordered",
        **extra,
    }


def test_a_balancer_without_a_default_route_is_refused_and_nothing_is_saved():
    inst = make_instance()
    with pytest.raises(ValidationError) as err:
        balancer_save(
            fields=fields(), routes=[{"name": "a", "intent": "x", "instance": inst, "priority": 1}]
        )
    assert err.value.message_dict["routes"] == [NO_DEFAULT]
    assert not Balancer.objects.exists()


def test_two_defaults_are_refused():
    inst = make_instance()
    with pytest.raises(ValidationError, match="Only one route"):
        balancer_save(
            fields=fields(),
            routes=[
                {"name": "a", "instance": inst, "priority": 1, "is_default": True},
                {"name": "b", "instance": inst, "priority": 2, "is_default": True},
            ],
        )


def test_intent_classifier_needs_a_chat_router_model_and_intents():
    inst = make_instance()
    with pytest.raises(ValidationError) as err:
        balancer_save(
            fields=fields(routing_mode="intent_classifier"),
            routes=[{"name": "a", "instance": inst, "priority": 1, "is_default": True}],
        )
    assert "router_model" in err.value.message_dict
    assert "routes[0].intent" in err.value.message_dict
    embedder = make_instance(workload_kind="embeddings")
    with pytest.raises(ValidationError, match="must be a chat instance"):
        balancer_save(
            fields=fields(routing_mode="intent_classifier", router_model=embedder),
            routes=[
                {"name": "a", "intent": "x", "instance": inst, "priority": 1, "is_default": True}
            ],
        )
    balancer = balancer_save(
        fields=fields(routing_mode="intent_classifier", router_model=make_router_model()),
        routes=[
            {"name": "a", "intent": "All.", "instance": inst, "priority": 1, "is_default": True}
        ],
    )
    assert balancer.routes.get().is_default


def test_route_destinations_must_match_the_balancer_workload_kind():
    group = make_group(workload_kind="embeddings")
    with pytest.raises(ValidationError) as err:
        balancer_save(
            fields=fields(),
            routes=[{"name": "a", "target_group": group, "priority": 1, "is_default": True}],
        )
    assert "serves embeddings" in err.value.message_dict["routes[0].destination"][0]


def test_serving_names_are_unique_and_slugs_are_checked():
    make_balancer(serving_name="taken")
    inst = make_instance()
    with pytest.raises(ValidationError) as err:
        balancer_save(
            fields=fields(name="Bad Name!", serving_name="taken"),
            routes=[{"name": "a", "instance": inst, "priority": 1, "is_default": True}],
        )
    assert {"name", "serving_name"} <= set(err.value.message_dict)


def test_weights_and_priorities_are_bounded():
    inst = make_instance()
    with pytest.raises(ValidationError) as err:
        balancer_save(
            fields=fields(),
            routes=[
                {"name": "a", "instance": inst, "priority": 0, "weight": 1001, "is_default": True}
            ],
        )
    assert "priority" in str(err.value) and "weight" in str(err.value)


def test_moving_the_default_between_routes_in_one_save_works():
    a, b = make_instance(), make_instance()
    balancer = make_balancer(
        routes=[
            {"name": "a", "instance": a, "priority": 1, "is_default": True},
            {"name": "b", "instance": b, "priority": 2},
        ]
    )
    balancer_save(
        balancer=balancer,
        fields={},
        routes=[
            {"name": "a", "instance": a, "priority": 1, "is_default": False},
            {"name": "b", "instance": b, "priority": 2, "is_default": True},
        ],
    )
    assert Route.objects.get(is_default=True).name == "b"


def test_the_database_itself_refuses_a_second_default():
    from django.db import IntegrityError, transaction

    balancer = make_balancer()
    with pytest.raises(IntegrityError), transaction.atomic():
        Route.objects.create(
            balancer=balancer, name="second", instance=make_instance(), is_default=True
        )


def test_the_admin_refuses_a_balancer_without_a_default(admin_client):
    inst = make_instance()
    response = admin_client.post(
        "/admin/balancers/balancer/add/",
        {
            "name": "adm",
            "serving_name": "adm",
            "workload_kind": "chat",
            "routing_mode": "ordered",
            "auto_preference": "balanced",
            "classifier_timeout": "1.5",
            "confidence_threshold": "0",
            "attempt_budget": "3",
            "request_timeout": "60",
            "enabled": "on",
            "routes-TOTAL_FORMS": "1",
            "routes-INITIAL_FORMS": "0",
            "routes-MIN_NUM_FORMS": "0",
            "routes-MAX_NUM_FORMS": "1000",
            "routes-0-name": "only",
            "routes-0-intent": "x",
            "routes-0-instance": str(inst.pk),
            "routes-0-priority": "1",
            "routes-0-weight": "100",
            "routes-0-enabled": "on",
            "routes-0-examples": "[]",
        },
    )
    assert response.status_code == 200
    assert NO_DEFAULT in response.content.decode()
    assert not Balancer.objects.filter(name="adm").exists()
