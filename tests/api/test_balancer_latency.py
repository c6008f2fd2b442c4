"""A route's latency threshold and hedging through the management API (issue 12, brief 003)."""

from __future__ import annotations

import pytest

from balancers.models import Balancer
from tests.factories import make_instance

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def instances() -> None:
    make_instance(instance_id="slowish")
    make_instance(instance_id="backup")


def _document(**first_route: object) -> dict:
    return {
        "name": "hedged",
        "serving_name": "hedged",
        "workload_kind": "chat",
        "routing_mode": "ordered",
        "routes": [
            {
                "name": "primary",
                "instance": "slowish",
                "priority": 1,
                "is_default": True,
                **first_route,
            },
            {"name": "backup", "instance": "backup", "priority": 2},
        ],
    }


def test_a_route_is_saved_with_its_threshold_and_hedge_and_read_back(admin_client) -> None:
    response = admin_client.post(
        "/api/balancers/",
        _document(latency_threshold_ms=1500, hedge=True),
        content_type="application/json",
    )
    assert response.status_code == 201, response.json()
    routes = response.json()["routes"]
    assert [(r["name"], r["latency_threshold_ms"], r["hedge"]) for r in routes] == [
        ("primary", 1500, True),
        ("backup", None, False),
    ]
    route = Balancer.objects.get(name="hedged").routes.get(name="primary")
    assert (route.latency_threshold_ms, route.hedge) == (1500, True)
    # A full update without them turns them off.
    document = _document()
    document["routes"][0].pop("hedge", None)
    response = admin_client.put("/api/balancers/hedged/", document, content_type="application/json")
    assert response.status_code == 200, response.json()
    assert response.json()["routes"][0]["latency_threshold_ms"] is None


@pytest.mark.parametrize(
    ("route", "field", "message"),
    [
        ({"hedge": True}, "routes[0].hedge", "Hedging starts at the latency threshold"),
        (
            {"latency_threshold_ms": 5},
            "routes[0].latency_threshold_ms",
            "greater than or equal to 10",
        ),
        (
            {"latency_threshold_ms": 600_001},
            "routes[0].latency_threshold_ms",
            "less than or equal to 600000",
        ),
        ({"latency_threshold_ms": "soon"}, "routes[0].latency_threshold_ms", "Expected an integer"),
    ],
)
def test_bad_thresholds_are_refused_naming_the_field(admin_client, route, field, message) -> None:
    response = admin_client.post(
        "/api/balancers/", _document(**route), content_type="application/json"
    )
    assert response.status_code == 400
    errors = response.json()
    assert set(errors) == {field}, errors
    assert message in errors[field][0]
    assert not Balancer.objects.exists()
