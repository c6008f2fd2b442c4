"""The create/edit wizard through Django's test client: draft in the session, nothing saved
early."""

from __future__ import annotations

import pytest

from balancers.models import Balancer
from balancers.validation import NO_DEFAULT
from tests.pages.conftest import route_post_data

DRAFT = "balancer-wizard:new"


def draft(client):
    return client.session[DRAFT]


def walk_to_routes(client, *, name: str = "billing-desk", mode: str = "intent_classifier") -> None:
    assert client.get("/balancers/new/").status_code == 302
    response = client.post(
        "/balancers/new/name/", {"nav": "next", "name": name, "serving_name": name}
    )
    assert response["Location"] == "/balancers/new/workload/"
    response = client.post("/balancers/new/workload/", {"nav": "next", "workload_kind": "chat"})
    assert response["Location"] == "/balancers/new/mode/"
    response = client.post("/balancers/new/mode/", {"nav": "next", "routing_mode": mode})
    if mode == "intent_classifier":
        assert response["Location"] == "/balancers/new/router/"
        response = client.post(
            "/balancers/new/router/",
            {
                "nav": "next",
                "router_model": "local-router",
                "classifier_timeout": "1.5",
                "confidence_threshold": "0",
            },
        )
    assert response["Location"] == "/balancers/new/routes/"


def test_the_wizard_starts_with_the_common_case_filled_in(admin_client, demo) -> None:
    response = admin_client.get("/balancers/new/")
    assert response.status_code == 302 and response["Location"] == "/balancers/new/name/"
    state = draft(admin_client)
    assert state["mode"]["routing_mode"] == "intent_classifier"
    assert state["router"]["router_model"] == "local-router"
    rows = state["routes"]["rows"]
    assert [r["name"] for r in rows] == ["efficient", "reasoning", "fallback"]
    assert [r["is_default"] for r in rows] == [False, False, True]
    assert [r["destination"] for r in rows] == [
        "group:efficient-pool",
        "group:reasoning-pool",
        "group:backup-group",
    ]
    page = admin_client.get("/balancers/new/name/")
    assert page.status_code == 200
    assert page["Cache-Control"].startswith("no-store") or "no-cache" in page["Cache-Control"]
    assert b'hx-trigger="keyup changed delay:300ms' in page.content


def test_a_full_walk_saves_the_balancer_only_at_the_last_step(admin_client, demo) -> None:
    walk_to_routes(admin_client)
    response = admin_client.post(
        "/balancers/new/routes/", route_post_data(draft(admin_client)["routes"]["rows"])
    )
    assert response["Location"] == "/balancers/new/review/"
    assert not Balancer.objects.filter(name="billing-desk").exists()
    review = admin_client.get("/balancers/new/review/")
    assert b"billing-desk" in review.content
    response = admin_client.post(
        "/balancers/new/review/",
        {"nav": "save", "attempt_budget": "4", "request_timeout": "600", "enabled": "on"},
    )
    assert response.status_code == 302 and response["Location"] == "/balancers/billing-desk/test/"
    balancer = Balancer.objects.get(name="billing-desk")
    assert (
        balancer.serving_name == "billing-desk"
        and balancer.router_model.instance_id == "local-router"
    )
    assert sorted(r.name for r in balancer.routes.all()) == ["efficient", "fallback", "reasoning"]
    assert balancer.routes.get(is_default=True).name == "fallback"
    assert DRAFT not in admin_client.session
    test_page = admin_client.get("/balancers/billing-desk/test/")
    assert b"model=&quot;billing-desk&quot;" in test_page.content
    assert b"http://testserver/v1" in test_page.content


def test_the_save_is_blocked_without_a_default_route(admin_client, demo) -> None:
    walk_to_routes(admin_client)
    rows = draft(admin_client)["routes"]["rows"]
    for row in rows:
        row["is_default"] = False
    response = admin_client.post("/balancers/new/routes/", route_post_data(rows), follow=True)
    assert response.redirect_chain == [("/balancers/new/routes/", 302)]  # refused: back to the step
    assert NO_DEFAULT in response.content.decode()
    assert 'data-testid="route-set-errors"' in response.content.decode()
    # Going straight to the last step does not get around it.
    response = admin_client.post(
        "/balancers/new/review/",
        {"nav": "save", "attempt_budget": "4", "request_timeout": "600"},
        follow=True,
    )
    assert response.redirect_chain == [("/balancers/new/review/", 302)]
    assert NO_DEFAULT in response.content.decode()
    assert not Balancer.objects.filter(name="billing-desk").exists()


def test_each_invalid_route_field_gets_its_own_message(admin_client, demo) -> None:
    walk_to_routes(admin_client)
    rows = draft(admin_client)["routes"]["rows"]
    rows[0].update(name="Not A Slug", destination="")
    rows[1].update(intent="", priority="0")
    html = admin_client.post(
        "/balancers/new/routes/", route_post_data(rows), follow=True
    ).content.decode()
    key0, key1 = rows[0]["key"], rows[1]["key"]
    assert f'id="id_r-{key0}-name-error"' in html and "lowercase letters" in html
    assert (
        f'id="id_r-{key0}-destination-error"' in html
        and "Pick a target group or an instance." in html
    )
    assert f'id="id_r-{key1}-intent-error"' in html and "Describe in one sentence" in html
    assert f'id="id_r-{key1}-priority-error"' in html
    assert 'aria-invalid="true"' in html


def test_name_step_errors_and_live_checks(admin_client, demo) -> None:
    admin_client.get("/balancers/new/")
    response = admin_client.post(
        "/balancers/new/name/",
        {"nav": "next", "name": "support-balancer", "serving_name": "bad name"},
        follow=True,
    )
    html = response.content.decode()
    assert response.redirect_chain == [("/balancers/new/name/", 302)]
    assert "A balancer named support-balancer already exists." in html
    assert "Use 1-128 letters" in html
    check = admin_client.get(
        "/balancers/new/check/",
        {"field": "serving_name", "serving_name": "support-balancer"},
        headers={"HX-Request": "true"},
    )
    assert "already serves support-balancer" in check.content.decode()
    assert b'id="feedback-serving_name"' in check.content and b"<html" not in check.content
    ok = admin_client.get(
        "/balancers/new/check/",
        {"field": "name", "name": "fresh-name"},
        headers={"HX-Request": "true"},
    )
    assert "Available" in ok.content.decode()


def test_back_and_autosave_keep_what_was_typed(admin_client, demo) -> None:
    admin_client.get("/balancers/new/")
    response = admin_client.post(
        "/balancers/new/name/autosave/",
        {"name": "half-typed", "serving_name": "half"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 204
    assert b'value="half-typed"' in admin_client.get("/balancers/new/name/").content
    walk_to_routes(admin_client, name="kept")
    response = admin_client.post(
        "/balancers/new/mode/", {"nav": "back", "routing_mode": "weighted"}
    )
    assert response["Location"] == "/balancers/new/workload/"
    assert draft(admin_client)["mode"]["routing_mode"] == "weighted"
    # A new visit to /balancers/new/ resumes the draft instead of starting over.
    assert admin_client.get("/balancers/new/")["Location"] == "/balancers/new/workload/"


def test_routes_are_added_and_removed_as_fragments(admin_client, demo) -> None:
    walk_to_routes(admin_client)
    rows = draft(admin_client)["routes"]["rows"]
    response = admin_client.post(
        "/balancers/new/routes/", route_post_data(rows, nav="add"), headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html and 'id="routes"' in html
    assert html.count("data-route-row") == 4
    assert len(draft(admin_client)["routes"]["rows"]) == 4
    rows = draft(admin_client)["routes"]["rows"]
    fallback = next(r for r in rows if r["name"] == "fallback")
    response = admin_client.post(
        "/balancers/new/routes/",
        route_post_data(rows, nav=f"remove:{fallback['key']}"),
        headers={"HX-Request": "true"},
    )
    html = response.content.decode()
    assert html.count("data-route-row") == 3 and NO_DEFAULT in html
    # Without htmx the same buttons work through a redirect.
    rows = draft(admin_client)["routes"]["rows"]
    response = admin_client.post("/balancers/new/routes/", route_post_data(rows, nav="add"))
    assert response.status_code == 302 and response["Location"] == "/balancers/new/routes/"


def test_autosave_of_the_routes_answers_the_route_set_message_out_of_band(
    admin_client, demo
) -> None:
    walk_to_routes(admin_client)
    rows = draft(admin_client)["routes"]["rows"]
    for row in rows:
        row["is_default"] = False
    data = route_post_data(rows)
    data.pop("nav")
    html = admin_client.post(
        "/balancers/new/routes/autosave/", data, headers={"HX-Request": "true"}
    ).content.decode()
    assert 'hx-swap-oob="true"' in html and NO_DEFAULT in html


def test_the_router_step_is_skipped_for_ordered_balancers(admin_client, demo) -> None:
    walk_to_routes(admin_client, name="ordered-one", mode="ordered")
    assert admin_client.get("/balancers/new/router/")["Location"] == "/balancers/new/routes/"
    rows = draft(admin_client)["routes"]["rows"]
    admin_client.post("/balancers/new/routes/", route_post_data(rows))
    response = admin_client.post(
        "/balancers/new/review/", {"nav": "save", "attempt_budget": "3", "request_timeout": "60"}
    )
    assert response.status_code == 302
    balancer = Balancer.objects.get(name="ordered-one")
    assert (
        balancer.routing_mode == "ordered"
        and balancer.router_model is None
        and balancer.attempt_budget == 3
    )
    assert balancer.enabled is False  # the box was left unchecked


def test_embeddings_cannot_use_the_intent_classifier(admin_client, demo) -> None:
    admin_client.get("/balancers/new/")
    admin_client.post("/balancers/new/workload/", {"nav": "next", "workload_kind": "embeddings"})
    state = draft(admin_client)
    assert state["mode"]["routing_mode"] == "ordered"
    assert [r["destination"] for r in state["routes"]["rows"]] == ["group:embed-pool"]
    response = admin_client.post(
        "/balancers/new/mode/", {"nav": "next", "routing_mode": "intent_classifier"}, follow=True
    )
    assert "use ordered or weighted for embeddings" in response.content.decode()


def test_the_same_wizard_edits_a_balancer(admin_client, demo) -> None:
    response = admin_client.get("/balancers/support-balancer/edit/?step=routes")
    assert response["Location"] == "/balancers/support-balancer/edit/routes/"
    balancer = Balancer.objects.get(name="support-balancer")
    key = f"balancer-wizard:{balancer.pk}"
    rows = admin_client.session[key]["routes"]["rows"]
    assert [r["name"] for r in rows] == ["efficient", "reasoning", "fallback"]
    rows[0]["intent"] = "Quick replies only."
    rows[1]["is_default"], rows[2]["is_default"] = True, False
    response = admin_client.post("/balancers/support-balancer/edit/routes/", route_post_data(rows))
    assert response["Location"] == "/balancers/support-balancer/edit/review/"
    balancer.refresh_from_db()
    assert balancer.routes.get(name="efficient").intent != "Quick replies only."  # not saved yet
    response = admin_client.post(
        "/balancers/support-balancer/edit/review/",
        {"nav": "save", "attempt_budget": "4", "request_timeout": "600", "enabled": "on"},
    )
    assert response["Location"] == "/balancers/support-balancer/"
    assert balancer.routes.get(name="efficient").intent == "Quick replies only."
    assert balancer.routes.get(is_default=True).name == "reasoning"
    assert key not in admin_client.session


def test_editing_keeps_the_name_unique_but_allows_its_own(admin_client, demo) -> None:
    admin_client.get("/balancers/support-balancer/edit/")
    ok = admin_client.post(
        "/balancers/support-balancer/edit/name/",
        {"nav": "next", "name": "support-balancer", "serving_name": "support-balancer"},
    )
    assert ok.status_code == 302
    taken = admin_client.post(
        "/balancers/support-balancer/edit/name/",
        {"nav": "next", "name": "embed-balancer", "serving_name": "support-balancer"},
        follow=True,
    )
    assert "A balancer named embed-balancer already exists." in taken.content.decode()


def test_discarding_a_draft_forgets_it(admin_client, demo) -> None:
    admin_client.get("/balancers/new/")
    admin_client.post("/balancers/new/name/autosave/", {"name": "throwaway", "serving_name": ""})
    response = admin_client.post("/balancers/new/discard/")
    assert response["Location"] == "/balancers/"
    assert DRAFT not in admin_client.session


@pytest.mark.parametrize("step", ["nope", "save"])
def test_unknown_steps_are_404(admin_client, demo, step: str) -> None:
    assert admin_client.get(f"/balancers/new/{step}/").status_code == 404


def test_the_review_step_saves_the_response_cache_and_the_savings_baseline(
    admin_client, demo
) -> None:
    walk_to_routes(admin_client, name="cached-desk")
    admin_client.post(
        "/balancers/new/routes/", route_post_data(draft(admin_client)["routes"]["rows"])
    )
    review = admin_client.get("/balancers/new/review/").content.decode()
    assert 'name="cache_mode"' in review and '<option value="fallback"' in review
    refused = admin_client.post(
        "/balancers/new/review/",
        {
            "nav": "save",
            "attempt_budget": "4",
            "request_timeout": "600",
            "enabled": "on",
            "cache_mode": "semantic",
            "cache_ttl_seconds": "0",
            "cache_similarity_threshold": "0.9",
            "baseline_route": "fallback",
        },
        follow=True,
    )
    assert refused.status_code == 200 and not Balancer.objects.filter(name="cached-desk").exists()
    response = admin_client.post(
        "/balancers/new/review/",
        {
            "nav": "save",
            "attempt_budget": "4",
            "request_timeout": "600",
            "enabled": "on",
            "cache_mode": "semantic",
            "cache_ttl_seconds": "120",
            "cache_similarity_threshold": "0.9",
            "cache_shared_across_keys": "on",
            "baseline_route": "fallback",
        },
    )
    assert response.status_code == 302
    balancer = Balancer.objects.get(name="cached-desk")
    assert (
        balancer.cache_mode,
        balancer.cache_ttl_seconds,
        balancer.cache_similarity_threshold,
        balancer.cache_shared_across_keys,
        balancer.baseline_route,
    ) == ("semantic", 120, 0.9, True, "fallback")
    detail = admin_client.get(f"/balancers/{balancer.name}/").content.decode()
    assert "Exact, then semantic · 120 s TTL" in detail and "shared across keys" in detail
