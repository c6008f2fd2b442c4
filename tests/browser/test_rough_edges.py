"""The wizard's rough edges as a browser meets them (issue 15): a refused step that a reload does
not post again, and a field that stops being marked invalid once its live check passes."""

from __future__ import annotations

import re
from urllib.parse import parse_qs

import pytest

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect


def test_a_reload_after_a_refused_step_keeps_the_edits_made_since(ui) -> None:
    page = ui.page
    ui.login()
    ui.go("/balancers/new/")
    page.get_by_label("Name", exact=True).fill("Billing Desk")
    page.get_by_label("Serving name").fill("billing-desk")
    ui.submit("Next →")
    expect(page).to_have_url(re.compile(r"/balancers/new/name/$"))
    expect(page.locator("#feedback-name")).to_contain_text("lowercase letters")
    # Edits after the refusal, saved as they are typed.
    page.get_by_label("Serving name").fill("billing-desk-v2")

    def saved_both(response) -> bool:
        posted = parse_qs(response.request.post_data or "")
        return response.url.endswith("/name/autosave/") and posted.get("description") == [
            "Billing questions from the help centre."
        ]

    with page.expect_response(saved_both):
        page.get_by_label("Description").fill("Billing questions from the help centre.")
        page.get_by_label("Description").blur()
    with page.expect_response(lambda r: r.url.endswith("/balancers/new/name/")) as reloaded:
        page.reload()
    assert reloaded.value.request.method == "GET"  # nothing posted again
    expect(page.get_by_label("Serving name")).to_have_value("billing-desk-v2")
    expect(page.get_by_label("Description")).to_have_value(
        "Billing questions from the help centre."
    )
    expect(page.get_by_label("Name", exact=True)).to_have_value("Billing Desk")
    expect(page.locator("#feedback-name")).to_contain_text("lowercase letters")


def test_a_field_is_no_longer_invalid_once_its_live_check_passes(ui) -> None:
    page = ui.page
    ui.login()
    ui.go("/balancers/new/")
    name = page.get_by_label("Name", exact=True)
    name.fill("support-balancer")  # taken
    page.get_by_label("Serving name").fill("billing-desk")
    ui.submit("Next →")
    expect(name).to_have_attribute("aria-invalid", "true")
    name.fill("billing-desk")
    expect(page.locator("#feedback-name")).to_have_text("✓ Available.")
    expect(name).not_to_have_attribute("aria-invalid", "true")
    name.fill("Billing Desk")  # and back: the check's problem marks it again
    expect(page.locator("#feedback-name")).to_contain_text("lowercase letters")
    expect(name).to_have_attribute("aria-invalid", "true")


def test_the_balancer_lists_row_buttons_stay_inside_the_table(ui) -> None:
    """Found walking the pages: at 1366 px the list ran past its card, the Test buttons cut off."""
    page = ui.page
    ui.login()
    expect(page.get_by_role("link", name="Test", exact=True).first).to_be_visible()
    scroll, client = page.evaluate(
        "(() => { const w = document.querySelector('.table-wrap'); return [w.scrollWidth, "
        "w.clientWidth]; })()"
    )
    assert scroll <= client, (scroll, client)
