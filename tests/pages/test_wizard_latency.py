"""The wizard's routes step sets a route's latency threshold and hedging (issue 12, brief 003)."""

from __future__ import annotations

import pytest

from balancers.models import Balancer
from tests.pages.conftest import route_post_data

pytestmark = pytest.mark.django_db

DRAFT = "balancer-wizard:new"


def walk_to_routes(client) -> None:
    client.get("/balancers/new/")
    client.post("/balancers/new/name/", {"nav": "next", "name": "hedged", "serving_name": "hedged"})
    client.post("/balancers/new/workload/", {"nav": "next", "workload_kind": "chat"})
    response = client.post("/balancers/new/mode/", {"nav": "next", "routing_mode": "ordered"})
    assert response["Location"] == "/balancers/new/routes/"


def test_a_route_gets_a_latency_threshold_and_hedging_and_the_edit_shows_them(
    admin_client, demo
) -> None:
    walk_to_routes(admin_client)
    page = admin_client.get("/balancers/new/routes/").content.decode()
    assert "Latency threshold" in page and "Hedge" in page
    rows = admin_client.session[DRAFT]["routes"]["rows"]
    rows[0].update(latency_threshold_ms="800", hedge=True)
    response = admin_client.post("/balancers/new/routes/", route_post_data(rows))
    assert response["Location"] == "/balancers/new/review/"
    review = admin_client.get("/balancers/new/review/").content.decode()
    assert "next target after 800 ms, hedged" in review
    response = admin_client.post(
        "/balancers/new/review/",
        {"nav": "save", "attempt_budget": "4", "request_timeout": "600", "enabled": "on"},
    )
    assert response.status_code == 302
    balancer = Balancer.objects.get(name="hedged")
    first = balancer.routes.get(name=rows[0]["name"])
    assert (first.latency_threshold_ms, first.hedge) == (800, True)
    others = balancer.routes.exclude(pk=first.pk)
    assert {(r.latency_threshold_ms, r.hedge) for r in others} == {(None, False)}
    # Editing starts from the saved values.
    admin_client.get("/balancers/hedged/edit/?step=routes")
    edit_rows = admin_client.session[f"balancer-wizard:{balancer.pk}"]["routes"]["rows"]
    saved = next(r for r in edit_rows if r["name"] == first.name)
    assert (saved["latency_threshold_ms"], saved["hedge"]) == ("800", True)


def test_hedging_without_a_threshold_and_a_threshold_out_of_range_are_refused(
    admin_client, demo
) -> None:
    walk_to_routes(admin_client)
    rows = admin_client.session[DRAFT]["routes"]["rows"]
    rows[0].update(hedge=True, latency_threshold_ms="")
    rows[1].update(latency_threshold_ms="5")
    response = admin_client.post("/balancers/new/routes/", route_post_data(rows), follow=True)
    assert response.redirect_chain == [("/balancers/new/routes/", 302)]  # refused: back to the step
    html = response.content.decode()
    key0, key1 = rows[0]["key"], rows[1]["key"]
    assert f'id="id_r-{key0}-hedge-error"' in html and "Hedging starts at the latency" in html
    assert f'id="id_r-{key1}-latency_threshold_ms-error"' in html
    assert not Balancer.objects.filter(name="hedged").exists()
