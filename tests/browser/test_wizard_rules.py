"""Content rules and the live overlap warning on the wizard's routes step, in a real Chromium."""

from __future__ import annotations

import re

import pytest

from balancers.models import Balancer

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect


def test_an_operator_adds_a_rule_and_sees_two_routes_overlap(ui) -> None:
    page = ui.page
    ui.login()
    ui.go("/balancers/support-balancer/edit/?step=routes")
    expect(page).to_have_url(re.compile(r"/edit/routes/$"))
    # The demo routes separate; making one route say what another says is flagged as it is typed.
    expect(page.get_by_test_id("routes-separate")).to_be_visible(timeout=15_000)
    efficient = page.locator("[data-route-row]").nth(0)
    reasoning = page.locator("[data-route-row]").nth(1)
    reasoning_intent = reasoning.get_by_label("Intent").input_value()
    efficient.get_by_label("Intent").fill(reasoning_intent)
    expect(page.get_by_test_id("route-overlaps")).to_contain_text("overlap", timeout=15_000)

    # A rule: added, its kind changed (the fields follow), filled in.
    page.get_by_role("button", name="Add rule").click()
    rule = page.locator("[data-rule-row]").nth(0)
    expect(rule.get_by_label("Rule name")).to_be_focused()
    rule.get_by_label("Rule name").fill("invoices")
    rule.get_by_label("Matches on").select_option("regex")
    rule = page.locator("[data-rule-row]").nth(0)
    expect(rule.get_by_label("Pattern")).to_be_visible()
    rule.get_by_label("Pattern").fill(r"INV-\d{4}")
    rule.get_by_label("Send to route").select_option("reasoning")
    efficient.get_by_label("Intent").fill(
        "Simple, short tasks: summaries, drafts, rewording and quick replies."
    )
    ui.submit("Next →")
    expect(page).to_have_url(re.compile(r"/edit/review/$"))
    expect(page.get_by_test_id("review-rules")).to_contain_text("invoices")
    ui.submit("Save changes")
    expect(page).to_have_url(re.compile(r"/balancers/support-balancer/$"))
    expect(page.get_by_test_id("content-rules")).to_contain_text("INV-\\d{4}")
    rule = Balancer.objects.get(name="support-balancer").rules.get()
    assert (rule.name, rule.kind, rule.value, rule.route.name) == (
        "invoices",
        "regex",
        r"INV-\d{4}",
        "reasoning",
    )
