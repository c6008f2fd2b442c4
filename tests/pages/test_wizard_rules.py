"""Content rules in the wizard's routes step: added as fragments, checked by the shared rules,
listed on the review step and the detail page, and round-tripped through an edit."""

from __future__ import annotations

from typing import Any

import pytest

from balancers.models import Balancer, ContentRule
from tests.pages.conftest import route_post_data
from tests.pages.test_wizard_pages import draft, walk_to_routes

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


def step_data(
    state: dict[str, Any], *, nav: str = "next", prefix: str = "/balancers/new/"
) -> dict[str, Any]:
    """The routes step's form, routes and rules, as a browser posts it from the draft."""
    data = route_post_data(state["routes"]["rows"], nav=nav)
    rules = state.get("rules", {}).get("rows", [])
    data["rules_present"] = "1"
    data["rule_key"] = [r["key"] for r in rules]
    for rule in rules:
        for field in (
            "name",
            "order",
            "kind",
            "value",
            "metadata_key",
            "min_tokens",
            "max_tokens",
            "route",
        ):
            data[f"u-{rule['key']}-{field}"] = rule.get(field, "")
        if rule.get("enabled", True):
            data[f"u-{rule['key']}-enabled"] = "on"
    return data


def add_rule(client, url: str = "/balancers/new/routes/", **fields: str) -> str:
    state = client.session[
        next(k for k in client.session.keys() if k.startswith("balancer-wizard:"))
    ]
    response = client.post(url, step_data(state, nav="add-rule"), headers=HTMX)
    html = response.content.decode()
    assert response.status_code == 200 and 'id="rules"' in html and "<html" not in html
    return html


def test_a_rule_is_added_filled_in_reviewed_and_saved(admin_client, demo) -> None:
    walk_to_routes(admin_client)
    html = add_rule(admin_client)
    assert html.count("data-rule-row") == 1
    state = draft(admin_client)
    state["rules"]["rows"][0].update(
        name="invoices", kind="regex", value=r"INV-\d{4}", route="reasoning"
    )
    response = admin_client.post("/balancers/new/routes/", step_data(state))
    assert response.status_code == 302 and response["Location"] == "/balancers/new/review/"

    review = admin_client.get("/balancers/new/review/").content.decode()
    assert 'data-testid="review-rules"' in review
    assert "invoices" in review and "INV-\\d{4}" in review and "route reasoning" in review

    response = admin_client.post(
        "/balancers/new/review/",
        {"nav": "save", "attempt_budget": "4", "request_timeout": "600", "enabled": "on"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    rule = ContentRule.objects.get()
    assert (rule.name, rule.kind, rule.value, rule.route.name, rule.order, rule.enabled) == (
        "invoices",
        "regex",
        r"INV-\d{4}",
        "reasoning",
        1,
        True,
    )
    detail = admin_client.get("/balancers/billing-desk/").content.decode()
    assert (
        'data-testid="content-rules"' in detail and "invoices" in detail and "INV-\\d{4}" in detail
    )


def test_a_bad_regex_is_refused_on_the_routes_step_with_the_re2_message(admin_client, demo) -> None:
    walk_to_routes(admin_client)
    add_rule(admin_client)
    state = draft(admin_client)
    state["rules"]["rows"][0].update(
        name="backref", kind="regex", value=r"(\w+) \1", route="efficient"
    )
    response = admin_client.post("/balancers/new/routes/", step_data(state), follow=True)
    html = response.content.decode()
    assert response.redirect_chain == [("/balancers/new/routes/", 302)]
    assert "RE2 syntax" in html
    # The last step refuses it too, and nothing is saved.
    response = admin_client.post(
        "/balancers/new/review/",
        {"nav": "save", "attempt_budget": "4", "request_timeout": "600"},
        follow=True,
    )
    assert response.status_code == 200 and "RE2 syntax" in response.content.decode()
    assert not Balancer.objects.filter(name="billing-desk").exists()


def test_a_rule_must_point_at_an_enabled_route(admin_client, demo) -> None:
    walk_to_routes(admin_client)
    add_rule(admin_client)
    state = draft(admin_client)
    state["routes"]["rows"][0]["enabled"] = False  # efficient
    state["rules"]["rows"][0].update(name="agents", kind="tools", route="efficient")
    html = admin_client.post(
        "/balancers/new/routes/", step_data(state), follow=True
    ).content.decode()
    assert "Route efficient is disabled" in html


def test_changing_the_kind_draws_that_kinds_fields(admin_client, demo) -> None:
    walk_to_routes(admin_client)
    add_rule(admin_client)
    state = draft(admin_client)
    key = state["rules"]["rows"][0]["key"]
    state["rules"]["rows"][0]["kind"] = "prompt_tokens"
    html = admin_client.post(
        "/balancers/new/routes/", step_data(state, nav="rule-kind"), headers=HTMX
    ).content.decode()
    assert (
        f'<label for="id_u-{key}-min_tokens">' in html
        and f'<label for="id_u-{key}-value">' not in html
    )
    state["rules"]["rows"][0]["kind"] = "metadata"
    html = admin_client.post(
        "/balancers/new/routes/", step_data(state, nav="rule-kind"), headers=HTMX
    ).content.decode()
    assert (
        f'<label for="id_u-{key}-metadata_key">' in html
        and f'<label for="id_u-{key}-min_tokens">' not in html
    )


def test_a_rule_is_removed_as_a_fragment(admin_client, demo) -> None:
    walk_to_routes(admin_client)
    add_rule(admin_client)
    add_rule(admin_client)
    state = draft(admin_client)
    assert len(state["rules"]["rows"]) == 2
    first = state["rules"]["rows"][0]["key"]
    html = admin_client.post(
        "/balancers/new/routes/", step_data(state, nav=f"remove-rule:{first}"), headers=HTMX
    ).content.decode()
    assert html.count("data-rule-row") == 1
    assert [r["key"] for r in draft(admin_client)["rules"]["rows"]] != [first]


def test_editing_keeps_the_saved_rules_and_saves_changes(admin_client, demo) -> None:
    test_a_rule_is_added_filled_in_reviewed_and_saved(admin_client, demo)
    edit = "/balancers/billing-desk/edit/"
    assert admin_client.get(edit + "?step=routes").status_code == 302
    state = admin_client.session[f"balancer-wizard:{Balancer.objects.get(name='billing-desk').pk}"]
    rows = state["rules"]["rows"]
    assert [(r["name"], r["kind"], r["value"], r["route"]) for r in rows] == [
        ("invoices", "regex", r"INV-\d{4}", "reasoning")
    ]
    page = admin_client.get(edit + "routes/").content.decode()
    assert 'value="invoices"' in page
    rows[0].update(kind="keywords", value="refund, chargeback", route="efficient", enabled=False)
    response = admin_client.post(edit + "routes/", step_data(state))
    assert response.status_code == 302
    response = admin_client.post(
        edit + "review/",
        {"nav": "save", "attempt_budget": "4", "request_timeout": "600", "enabled": "on"},
    )
    assert response.status_code == 302
    rule = ContentRule.objects.get()
    assert (rule.kind, rule.value, rule.route.name, rule.enabled) == (
        "keywords",
        "refund, chargeback",
        "efficient",
        False,
    )


# -- how well the routes separate (the live overlap warning)
# --------------------------------------------


def separation(client, rows: list[dict[str, Any]], url: str = "/balancers/new/separation/") -> str:
    response = client.post(url, route_post_data(rows), headers=HTMX)
    assert response.status_code == 200 and "<html" not in response.content.decode()
    return response.content.decode()


def test_the_routes_step_asks_how_the_routes_separate(admin_client, demo) -> None:
    walk_to_routes(admin_client)
    page = admin_client.get("/balancers/new/routes/").content.decode()
    assert 'id="route-separation"' in page and 'hx-post="/balancers/new/separation/"' in page
    html = separation(admin_client, draft(admin_client)["routes"]["rows"])
    assert 'data-testid="routes-separate"' in html and "route-overlaps" not in html


def test_two_routes_that_say_the_same_thing_are_flagged_as_overlapping(admin_client, demo) -> None:
    walk_to_routes(admin_client)
    rows = draft(admin_client)["routes"]["rows"]
    rows[0].update(
        name="billing",
        intent="Billing questions: invoices, refunds, payments.",
        examples="Where is my invoice?\nI was charged twice\nRefund my order\nUpdate my card",
    )
    rows[1].update(
        name="payments",
        intent="Questions about invoices, refunds and charges.",
        examples="Send me the invoice again\nWhy was I charged?\nI want my money back\nChange "
        "payment method",
    )
    html = separation(admin_client, rows)
    assert 'data-testid="route-overlaps"' in html
    assert "payments and billing overlap" in html or "billing and payments overlap" in html
    assert "fallback" not in html  # the catch-all is meant to be far from everything


def test_the_separation_check_is_for_operators_only(client, demo) -> None:
    response = client.post("/balancers/new/separation/", {"route_key": []})
    assert response.status_code == 302 and "/login" in response["Location"]
