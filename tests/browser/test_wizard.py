"""A new operator walks the create wizard, then edits a balancer, in a real Chromium."""

from __future__ import annotations

import re

import pytest

from balancers.models import Balancer
from balancers.validation import NO_DEFAULT

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect


def some_traffic() -> None:
    """A day of usage events for support-balancer, so the list's sparkline has a shape."""
    from datetime import timedelta

    from django.utils import timezone

    from gateway.models import UsageEvent

    support = Balancer.objects.get(name="support-balancer")
    now = timezone.now()
    UsageEvent.objects.bulk_create(
        UsageEvent(
            created_at=now - timedelta(hours=hour, minutes=n),
            request_id=f"seed-{hour}-{n}",
            endpoint="chat",
            balancer=support,
            serving_name="support-balancer",
            route="efficient",
            instance="qwen-cheap-a",
            status_code=200,
            latency_ms=80.0,
        )
        for hour in range(24)
        for n in range(3 + (hour * 7) % 11)
    )


def route_row(page, index: int):
    return page.locator("[data-route-row]").nth(index)


def test_a_new_operator_creates_an_intent_classifier_balancer_and_smoke_tests_it(ui) -> None:
    page = ui.page
    some_traffic()
    ui.page.goto(ui.base_url + "/balancers/")
    expect(page).to_have_url(re.compile(r"/login/"))
    ui.shot("login")
    ui.login()
    expect(page.get_by_role("heading", name="Balancers")).to_be_visible()
    ui.shot("balancer-list")

    page.get_by_role("link", name="New balancer").click()
    expect(page).to_have_url(re.compile(r"/balancers/new/name/$"))

    # Step 1: names are checked as they are typed.
    name = page.get_by_label("Name", exact=True)
    name.press_sequentially("support-balancer")
    expect(page.locator("#feedback-name")).to_contain_text("already exists")
    name.fill("Billing Desk")
    expect(page.locator("#feedback-name")).to_contain_text("lowercase letters")
    name.fill("billing-desk")
    expect(page.locator("#feedback-name")).to_contain_text("Available")
    page.get_by_label("Serving name").fill("billing-desk")
    expect(page.locator("#feedback-serving_name")).to_contain_text('model="billing-desk"')
    page.get_by_label("Description").fill("Billing questions from the help centre.")
    page.get_by_label("Description").blur()
    ui.shot("wizard-1-name")
    # A reload keeps what was typed (the draft lives on the server).
    page.wait_for_timeout(900)
    page.reload()
    expect(page.get_by_label("Name", exact=True)).to_have_value("billing-desk")
    expect(page.get_by_label("Description")).to_have_value(
        "Billing questions from the help centre."
    )
    ui.submit("Next →")

    # Step 2: chat is the default.
    expect(page).to_have_url(re.compile(r"/balancers/new/workload/$"))
    expect(page.get_by_role("radio", name=re.compile("^Chat"))).to_be_checked()
    ui.shot("wizard-2-workload")
    ui.submit("Next →")

    # Step 3: intent_classifier is the default.
    expect(page).to_have_url(re.compile(r"/balancers/new/mode/$"))
    expect(page.get_by_role("radio", name=re.compile("^intent_classifier"))).to_be_checked()
    ui.shot("wizard-3-mode")
    ui.submit("Next →")

    # Step 4: the built-in local router model is preselected.
    expect(page).to_have_url(re.compile(r"/balancers/new/router/$"))
    expect(page.get_by_role("radio", name=re.compile("Local router model"))).to_be_checked()
    ui.shot("wizard-4-router")
    ui.submit("Next →")

    # Step 5: three routes are filled in, fallback the default.
    expect(page).to_have_url(re.compile(r"/balancers/new/routes/$"))
    rows = page.locator("[data-route-row]")
    expect(rows).to_have_count(3)
    expect(route_row(page, 2).get_by_label("Route name")).to_have_value("fallback")
    expect(route_row(page, 2).get_by_role("radio", name="Default route")).to_be_checked()
    ui.shot("wizard-5-routes")

    # Rows come and go without a page load.
    page.evaluate("window.__samePage = true")
    route_row(page, 2).get_by_role("button", name=re.compile("^Remove")).click()
    expect(rows).to_have_count(2)
    expect(page.get_by_test_id("route-set-errors")).to_contain_text(NO_DEFAULT)
    page.get_by_role("button", name="Add route").click()
    expect(rows).to_have_count(3)
    assert page.evaluate("window.__samePage") is True
    new_row = route_row(page, 2)
    expect(new_row.get_by_label("Route name")).to_be_focused()
    new_row.get_by_label("Route name").fill("fallback")
    new_row.get_by_label("Intent").fill("Anything else, and the backup when the other routes fail.")
    new_row.get_by_label("Destination").select_option("group:backup-group")

    # No default: the save is blocked, with the message beside the routes.
    ui.submit("Next →")
    expect(page).to_have_url(re.compile(r"/balancers/new/routes/$"))
    expect(page.get_by_test_id("route-set-errors")).to_contain_text(NO_DEFAULT)
    ui.shot("wizard-5-routes-no-default")
    assert not Balancer.objects.filter(name="billing-desk").exists()

    route_row(page, 2).get_by_role("radio", name="Default route").check()
    expect(page.get_by_test_id("route-set-errors")).to_have_count(0)
    ui.submit("Next →")

    # Step 6: review; back and next keep the routes as typed.
    expect(page).to_have_url(re.compile(r"/balancers/new/review/$"))
    ui.submit("← Back")
    expect(rows).to_have_count(3)
    expect(route_row(page, 2).get_by_label("Route name")).to_have_value("fallback")
    expect(route_row(page, 2).get_by_role("radio", name="Default route")).to_be_checked()
    ui.submit("Next →")
    expect(page.get_by_text("billing-desk").first).to_be_visible()
    ui.shot("wizard-6-review")
    assert not Balancer.objects.filter(name="billing-desk").exists()
    ui.submit("Save balancer")

    # Saved: sample call and smoke test.
    expect(page).to_have_url(re.compile(r"/balancers/billing-desk/test/$"))
    python = page.get_by_test_id("sample-python")
    expect(python).to_contain_text('model="billing-desk"')
    expect(python).to_contain_text(ui.base_url + "/v1")
    page.get_by_role("tab", name="curl").click()
    expect(page.get_by_test_id("sample-curl")).to_contain_text(ui.base_url + "/v1/chat/completions")
    expect(page.get_by_label("Route")).to_have_value("fallback")
    page.get_by_role("button", name="Send test request").click()
    expect(page.get_by_test_id("smoke-answer")).not_to_be_empty()
    expect(page.get_by_test_id("smoke-route")).to_have_text("fallback")
    expect(page.get_by_test_id("smoke-instance")).to_have_text("backup-small")
    page.get_by_label("Route").select_option("reasoning")
    page.get_by_role("button", name="Send test request").click()
    expect(page.get_by_test_id("smoke-route")).to_have_text("reasoning")
    expect(page.get_by_test_id("smoke-instance")).to_have_text("gpt-oss-120b")
    ui.shot("wizard-6-save-and-test")

    balancer = Balancer.objects.get(name="billing-desk")
    routes = {r.name: r for r in balancer.routes.all()}
    assert set(routes) == {"efficient", "reasoning", "fallback"}
    assert routes["fallback"].is_default and routes["fallback"].target_group.name == "backup-group"
    assert balancer.router_model.instance_id == "local-router"


def test_an_operator_creates_an_ordered_balancer_with_the_keyboard(ui) -> None:
    page = ui.page
    ui.login()
    ui.go("/balancers/new/")
    page.get_by_label("Name", exact=True).fill("orders-failover")
    page.keyboard.press("Tab")
    page.keyboard.type("orders")
    with page.expect_navigation():
        page.keyboard.press("Enter")  # Enter means Next
    expect(page).to_have_url(re.compile(r"/workload/$"))
    with page.expect_navigation():
        page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/mode/$"))
    page.get_by_role("radio", name=re.compile("^ordered")).check()
    ui.submit("Next →")
    # The router model step does not apply to ordered balancers.
    expect(page).to_have_url(re.compile(r"/routes/$"))
    expect(page.get_by_role("listitem").filter(has_text="Router model")).to_contain_text(
        "Not needed"
    )

    rows = page.locator("[data-route-row]")
    route_row(page, 0).get_by_label("Route name").fill("primary")
    route_row(page, 0).get_by_label("Destination").select_option("instance:inst_a")
    route_row(page, 1).get_by_label("Route name").fill("secondary")
    route_row(page, 1).get_by_label("Destination").select_option("")
    route_row(page, 1).get_by_label("Priority").fill("0")
    route_row(page, 2).get_by_role("button", name=re.compile("^Remove")).click()
    expect(rows).to_have_count(2)
    route_row(page, 0).get_by_role("radio", name="Default route").check()
    ui.submit("Next →")

    # Every invalid input gets its message beside the field.
    second = route_row(page, 1)
    expect(second.get_by_text("Pick a target group or an instance.")).to_be_visible()
    expect(second.get_by_text("greater than or equal to 1")).to_be_visible()
    expect(second.get_by_label("Destination")).to_have_attribute("aria-invalid", "true")
    ui.shot("wizard-5-routes-field-errors")
    second.get_by_label("Destination").select_option("instance:inst_b")
    second.get_by_label("Priority").fill("2")
    ui.submit("Next →")

    expect(page).to_have_url(re.compile(r"/review/$"))
    ui.submit("Save balancer")
    expect(page).to_have_url(re.compile(r"/balancers/orders-failover/test/$"))
    page.get_by_role("button", name="Send test request").click()
    expect(page.get_by_test_id("smoke-route")).to_have_text("primary")
    expect(page.get_by_test_id("smoke-instance")).to_have_text("inst_a")

    balancer = Balancer.objects.get(name="orders-failover")
    assert balancer.routing_mode == "ordered" and balancer.router_model is None
    assert [(r.name, r.priority, r.is_default) for r in balancer.routes.order_by("priority")] == [
        ("primary", 1, True),
        ("secondary", 2, False),
    ]


def test_an_operator_edits_a_route_from_the_detail_page(ui) -> None:
    page = ui.page
    ui.login()
    ui.go("/balancers/support-balancer/")
    expect(page.get_by_test_id("lane-efficient")).to_be_visible()
    ui.shot("balancer-detail")
    page.get_by_role("link", name="Edit routes").click()
    expect(page).to_have_url(re.compile(r"/balancers/support-balancer/edit/routes/$"))
    efficient = route_row(page, 0)
    expect(efficient.get_by_label("Route name")).to_have_value("efficient")
    efficient.get_by_label("Intent").fill(
        "Short, simple tasks: one-line summaries and quick replies."
    )
    efficient.get_by_label("Destination").select_option("group:tech-support-pool")
    ui.submit("Next →")
    expect(page).to_have_url(re.compile(r"/edit/review/$"))
    ui.submit("Save changes")
    expect(page).to_have_url(re.compile(r"/balancers/support-balancer/$"))
    expect(page.get_by_role("status").first).to_contain_text("Saved support-balancer")
    expect(page.get_by_test_id("lane-efficient")).to_contain_text("one-line summaries")
    expect(page.get_by_test_id("lane-efficient")).to_contain_text("tech-support-pool")

    route = Balancer.objects.get(name="support-balancer").routes.get(name="efficient")
    assert route.intent == "Short, simple tasks: one-line summaries and quick replies."
    assert route.target_group.name == "tech-support-pool"
    page.get_by_role("link", name="Live board").click()
    expect(page.get_by_test_id("route-lanes")).to_be_visible()
    ui.shot("balancer-board")
