"""Correcting the router in Chromium: a playground decision marked wrong, the figures shown, the
next request routed where the operator said."""

from __future__ import annotations

import pytest

from balancers.models import Balancer, Route
from tests.pages.ui_support import usage_writer_reset

pytestmark = pytest.mark.browser

PROMPT = "Rewrite this escalation note so it sounds more polite."  # demo: efficient, 0.56


def test_an_operator_corrects_a_playground_decision_in_the_browser(ui) -> None:
    from playwright.sync_api import expect

    Balancer.objects.filter(name="support-balancer").update(log_prompts=True)
    page = ui.page
    ui.login()
    ui.go("/playground/?balancer=support-balancer")
    page.locator("#pg-prompt").fill(PROMPT)
    page.get_by_role("button", name="Send", exact=True).click()
    result = page.get_by_test_id("playground-result").first
    expect(result).to_contain_text("route efficient")
    usage_writer_reset()  # the usage event (with its prompt) is written before the form asks for it

    result.get_by_text("Wrong route?").click()
    form = result.get_by_test_id("correction-form")
    expect(form).to_contain_text(PROMPT)
    form.get_by_label("It should have gone to").select_option("reasoning")
    form.get_by_label("Keep this prompt as an example of that route").check()
    form.get_by_role("button", name="Correct the route").click()
    notice = form.get_by_test_id("correction-notice")
    expect(notice).to_contain_text("0 of 1 right before (0%), 1 of 1 after (100%)")
    assert (
        Route.objects.get(balancer__name="support-balancer", name="reasoning").examples[-1]
        == PROMPT
    )

    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.get_by_test_id("playground-result").first).to_contain_text("route reasoning")
